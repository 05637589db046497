//! The latency histogram as a PNG: bars, axes and tick labels drawn by hand (a 3×5 pixel
//! font for digits), so no font files are needed. Axis titles are in the markdown summary.

use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

const W: usize = 900;
const H: usize = 420;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 20;
const BOTTOM: usize = 40;
const BINS: usize = 60;

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

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self { px: vec![255; W * H * 3] }
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < W && y < H {
            let i = (y * W + x) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: [u8; 3]) {
        for y in y0..y1.min(H) {
            for x in x0..x1.min(W) {
                self.set(x, y, c);
            }
        }
    }

    /// Text with the 3×5 font at scale 2, top-left at (x, y).
    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        const SCALE: usize = 2;
        for (k, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        let px = x + k * 4 * SCALE + col * SCALE;
                        let py = y + r * SCALE;
                        self.rect(px, py, px + SCALE, py + SCALE, c);
                    }
                }
            }
        }
    }
}

/// Width in pixels of `s` as drawn by [`Canvas::text`].
fn text_width(s: &str) -> usize {
    s.chars().count() * 8
}

fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b001, 0b001],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0, 0, 0, 0, 0b010],
        '>' => [0b100, 0b010, 0b001, 0b010, 0b100],
        'm' => [0, 0, 0b111, 0b111, 0b101],
        's' => [0, 0b011, 0b100, 0b001, 0b110],
        _ => [0; 5],
    }
}

/// 1, 2 or 5 × 10^k, at least `x`.
fn nice_ceil(x: f64) -> f64 {
    let x = x.max(1e-3);
    let mag = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|&v| v >= x * 0.999_999).unwrap_or(10.0 * mag)
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 || v == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// Writes a histogram of `values_us` (latencies in µs) to `path`; the x axis runs to 1.25 × p99
/// rounded up to 1/2/5 × 10^k ms, with an overflow bar; green line p50, orange line p99.
pub fn histogram(path: &Path, values_us: &[u64], p50_us: u64, p99_us: u64) -> Result<HistogramInfo> {
    let x_max_ms = nice_ceil(p99_us as f64 / 1000.0 * 1.25).max(1.0);
    let bin_ms = x_max_ms / BINS as f64;
    let mut counts = [0u64; BINS + 1];
    for &v in values_us {
        let b = ((v as f64 / 1000.0) / bin_ms) as usize;
        counts[b.min(BINS)] += 1;
    }
    let overflow = counts[BINS];
    let max_count = counts.iter().copied().max().unwrap_or(0).max(1);

    let mut c = Canvas::new();
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / (BINS + 2); // one empty slot before the overflow bar
    let base_y = TOP + plot_h;
    for (i, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let h = ((n as f64 / max_count as f64) * plot_h as f64).round().max(1.0) as usize;
        let x0 = LEFT + if i == BINS { (BINS + 1) * slot } else { i * slot };
        let color = if i == BINS { [200, 40, 40] } else { [60, 110, 180] };
        c.rect(x0 + 1, base_y - h, x0 + slot, base_y, color);
    }
    // Percentile markers.
    for (us, color) in [(p50_us, [40, 160, 60]), (p99_us, [230, 140, 20])] {
        let x = LEFT + ((us as f64 / 1000.0 / bin_ms) * slot as f64) as usize;
        if x < LEFT + BINS * slot {
            for y in (TOP..base_y).step_by(2) {
                c.rect(x, y, x + 2, y + 1, color);
            }
        }
    }
    // Axes, ticks and labels.
    let black = [0, 0, 0];
    c.rect(LEFT - 1, TOP, LEFT, base_y + 1, black);
    c.rect(LEFT - 1, base_y, LEFT + (BINS + 2) * slot, base_y + 1, black);
    for k in 0..=5 {
        let x = LEFT + k * BINS * slot / 5;
        c.rect(x, base_y, x + 1, base_y + 6, black);
        let label = fmt_ms(x_max_ms * k as f64 / 5.0);
        c.text(x.saturating_sub(text_width(&label) / 2), base_y + 10, &label, black);
    }
    let ox = LEFT + (BINS + 1) * slot;
    c.text(ox + 2, base_y + 26, ">", [200, 40, 40]);
    c.text(W - RIGHT - text_width("ms"), base_y + 26, "ms", black);
    for k in 0..=2 {
        let y = base_y - k * plot_h / 2;
        c.rect(LEFT - 6, y, LEFT, y + 1, black);
        let label = (max_count * k as u64 / 2).to_string();
        c.text((LEFT - 10).saturating_sub(text_width(&label)), y.saturating_sub(5), &label, black);
    }

    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), W as u32, H as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&c.px).context("writing the PNG")?;
    Ok(HistogramInfo { x_max_ms, bin_ms, bins: BINS, overflow, max_count })
}
