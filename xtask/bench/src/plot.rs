//! The latency histogram as a PNG, drawn with `plotters` on its bitmap backend. Text uses the
//! Hack font shipped inside the `epaint_default_fonts` crate (registered with plotters'
//! `ab_glyph` renderer), so no system font is read.
//!
//! Changes when the picture changes; depends on nothing of the bench.

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Serialize;

const W: u32 = 900;
const H: u32 = 420;
const BINS: usize = 60;
/// The one font the picture uses.
const FONT: &str = "sans-serif";

/// How the histogram was laid out (for the summary).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistogramInfo {
    /// The x axis spans 0..x_max_ms, in `bins` bins.
    pub x_max_ms: f64,
    /// Width of one bin, ms.
    pub bin_ms: f64,
    /// Number of bins (plus one red overflow bar on the right for values above x_max_ms).
    pub bins: usize,
    /// Values above x_max_ms.
    pub overflow: u64,
    /// Height of the tallest bar (the top of the y axis).
    pub max_count: u64,
}

/// 1, 2 or 5 × 10^k, at least `x`.
fn nice_ceil(x: f64) -> f64 {
    let x = x.max(1e-3);
    let mag = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|&v| v >= x * 0.999_999).unwrap_or(10.0 * mag)
}

/// The layout and the bar heights (the last one: values above `x_max_ms`).
fn bins(values_us: &[u64], p99_us: u64) -> (HistogramInfo, Vec<u64>) {
    let x_max_ms = nice_ceil(p99_us as f64 / 1000.0 * 1.25).max(1.0);
    let bin_ms = x_max_ms / BINS as f64;
    let mut counts = vec![0u64; BINS + 1];
    for &v in values_us {
        let b = ((v as f64 / 1000.0) / bin_ms) as usize;
        counts[b.min(BINS)] += 1;
    }
    let max_count = counts.iter().copied().max().unwrap_or(0).max(1);
    (HistogramInfo { x_max_ms, bin_ms, bins: BINS, overflow: counts[BINS], max_count }, counts)
}

/// Writes a histogram of `values_us` (latencies in µs) to `path`; the x axis runs to 1.25 × p99
/// rounded up to 1/2/5 × 10^k ms, with a red overflow bar; green line p50, orange line p99.
pub fn histogram(path: &Path, values_us: &[u64], p50_us: u64, p99_us: u64) -> Result<HistogramInfo> {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        // A font that fails to parse shows up as an error when the text is drawn.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::HACK_REGULAR);
    });
    let (info, counts) = bins(values_us, p99_us);
    draw(path, &info, &counts, p50_us as f64 / 1000.0, p99_us as f64 / 1000.0)
        .map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    Ok(info)
}

fn draw(
    path: &Path,
    info: &HistogramInfo,
    counts: &[u64],
    p50_ms: f64,
    p99_ms: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let bin = info.bin_ms;
    // One empty bin, then the overflow bar.
    let x_end = info.x_max_ms + 2.0 * bin;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end, 0u64..info.max_count + info.max_count / 20 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("request sent → client holds the value, ms (red: above the axis)")
        .y_desc("(client, change) pairs")
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    let blue = RGBColor(60, 110, 180);
    let red = RGBColor(200, 40, 40);
    chart.draw_series(counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, &n)| {
        let (x0, color) = if i == info.bins { (info.x_max_ms + bin, red) } else { (i as f64 * bin, blue) };
        Rectangle::new([(x0, 0), (x0 + bin * 0.9, n)], color.filled())
    }))?;
    for (ms, color) in [(p50_ms, RGBColor(40, 160, 60)), (p99_ms, RGBColor(230, 140, 20))] {
        if ms < info.x_max_ms {
            chart.draw_series(DashedLineSeries::new(
                [(ms, 0), (ms, info.max_count)],
                4,
                4,
                color.stroke_width(2),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_span_a_round_axis_with_an_overflow_bar() {
        let values: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let (info, counts) = bins(&values, 99_000);
        // 1.25 × 99 ms = 123.75 → 200 ms, 60 bins.
        assert_eq!((info.x_max_ms, info.bins, info.overflow), (200.0, 60, 0));
        assert_eq!(counts.iter().sum::<u64>(), 100);
        let (info, counts) = bins(&[1_000, 2_000, 500_000], 2_000);
        assert_eq!((info.x_max_ms, info.overflow, counts[60]), (5.0, 1, 1));
    }

    #[test]
    fn the_picture_is_a_png() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("h.png");
        let values: Vec<u64> = (0..1000).map(|i| 1_000 + i * 37).collect();
        histogram(&path, &values, 19_000, 37_000)?;
        let bytes = std::fs::read(&path)?;
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 2_000, "{} bytes", bytes.len());
        Ok(())
    }
}
