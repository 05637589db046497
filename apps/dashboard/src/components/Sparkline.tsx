export interface SparkPoint {
  t: number;
  v: number;
}

export interface SparklineProps {
  points: readonly SparkPoint[];
  now: number;
  windowMs: number;
  label: string;
  width?: number;
  height?: number;
  testId?: string;
}

/** Builds the SVG path of a step chart (value holds until the next point). Exported for tests. */
export function stepPath(
  points: readonly SparkPoint[],
  now: number,
  windowMs: number,
  width: number,
  height: number,
): { line: string; area: string; max: number; last: { x: number; y: number } | null } {
  if (points.length === 0) return { line: '', area: '', max: 0, last: null };
  const start = now - windowMs;
  const visible = points.filter((p) => p.t >= start);
  const before = points.filter((p) => p.t < start);
  const series = before.length ? [{ t: start, v: before[before.length - 1].v }, ...visible] : visible;
  if (series.length === 0) return { line: '', area: '', max: 0, last: null };
  const max = Math.max(1, ...series.map((p) => p.v));
  const pad = 3;
  const x = (t: number) => Math.max(0, Math.min(width, ((t - start) / windowMs) * width));
  const y = (v: number) => pad + (height - 2 * pad) * (1 - v / (max * 1.1));
  const fmt = (n: number) => (Math.round(n * 10) / 10).toString();
  let line = `M${fmt(x(series[0].t))},${fmt(y(series[0].v))}`;
  for (let i = 1; i < series.length; i++) {
    line += ` H${fmt(x(series[i].t))} V${fmt(y(series[i].v))}`;
  }
  line += ` H${fmt(width)}`;
  const area = `${line} V${fmt(height)} H${fmt(x(series[0].t))} Z`;
  const lastPoint = series[series.length - 1];
  return { line, area, max, last: { x: width, y: y(lastPoint.v) } };
}

/** A small live step chart of pushed values over the last minutes. Plain SVG. */
export function Sparkline({ points, now, windowMs, label, width = 300, height = 56, testId }: SparklineProps) {
  const { line, area, last } = stepPath(points, now, windowMs, width, height);
  return (
    <svg
      className="sparkline"
      viewBox={`0 0 ${width} ${height}`}
      preserveAspectRatio="none"
      role="img"
      aria-label={label}
      data-testid={testId}
      data-points={points.length}
    >
      <line x1="0" x2={width} y1={height - 0.5} y2={height - 0.5} className="sparkline-axis" />
      {area && <path d={area} className="sparkline-area" />}
      {line && <path d={line} className="sparkline-line" vectorEffect="non-scaling-stroke" />}
      {last && (
        <path d={`M${last.x - 0.01},${last.y} h0.01`} className="sparkline-dot" vectorEffect="non-scaling-stroke" />
      )}
    </svg>
  );
}
