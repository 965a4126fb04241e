//! The report's plots, as SVG written by hand and as PNG drawn by our own rasteriser (no plotting
//! dependency, no system fonts): per-task accuracy bars for several runs, and accuracy against
//! encoder size with a fitted power law for scaling studies. Each plot's SVG and PNG share one
//! layout so the two files show the same picture.

use std::fmt::Write;

use super::raster::{self, BLACK, Canvas, Rgb, WHITE};
use crate::error::Result;

const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Geometry of the grouped bar chart (pixels), shared by the SVG and the PNG.
struct BarsLayout {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    plot_w: f64,
    plot_h: f64,
    group_w: f64,
    bar_w: f64,
}

impl BarsLayout {
    fn new(groups: usize, series: usize) -> Self {
        let (w, h) = (860.0, 420.0);
        let (left, right, top, bottom) = (60.0, 170.0, 40.0, 50.0);
        let plot_w = w - left - right;
        let group_w = plot_w / groups.max(1) as f64;
        Self {
            w,
            h,
            left,
            right,
            top,
            plot_w,
            plot_h: h - top - bottom,
            group_w,
            bar_w: group_w * 0.8 / series.max(1) as f64,
        }
    }
}

/// Grouped bars: one group per label (sub-task), one bar per series (run). Values in percent.
pub fn bars_svg(title: &str, labels: &[&str], series: &[(String, Vec<Option<f64>>)]) -> String {
    let BarsLayout {
        w,
        h,
        left,
        right,
        top,
        plot_w,
        plot_h,
        group_w,
        bar_w,
    } = BarsLayout::new(labels.len(), series.len());
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    for tick in (0..=100).step_by(20) {
        let y = top + plot_h * (1.0 - tick as f64 / 100.0);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{tick}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0
        );
    }
    for (g, label) in labels.iter().enumerate() {
        let x0 = left + g as f64 * group_w + group_w * 0.1;
        for (k, (_, values)) in series.iter().enumerate() {
            if let Some(Some(v)) = values.get(g) {
                let bh = plot_h * v.clamp(0.0, 100.0) / 100.0;
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{:.2}</title></rect>"#,
                    x0 + k as f64 * bar_w,
                    top + plot_h - bh,
                    bar_w * 0.95,
                    PALETTE[k % PALETTE.len()],
                    v
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + (g as f64 + 0.5) * group_w,
            top + plot_h + 18.0,
            escape(label)
        );
    }
    let _ = write!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">accuracy (%)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    legend(
        &mut s,
        w - right + 15.0,
        top,
        series.iter().map(|(n, _)| n.as_str()),
    );
    s.push_str("</svg>\n");
    s
}

fn legend<'a>(s: &mut String, x: f64, y: f64, names: impl Iterator<Item = &'a str>) {
    for (k, name) in names.enumerate() {
        let yy = y + 18.0 * k as f64;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{yy}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            PALETTE[k % PALETTE.len()],
            x + 18.0,
            yy + 10.5,
            escape(name)
        );
    }
}

/// Least-squares fit of `acc = a * size^b` in log-log space. Needs two distinct sizes.
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if pts.len() < 2 || sxx <= 0.0 {
        return None;
    }
    let b = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
    Some(((my - b * mx).exp(), b))
}

/// Geometry of the scaling plot: log10(size) on x with a margin, accuracy from 0 on y.
#[derive(Debug, Clone, Copy)]
struct ScalingLayout {
    w: f64,
    h: f64,
    left: f64,
    top: f64,
    pw: f64,
    ph: f64,
    xmin: f64,
    xmax: f64,
    ymax: f64,
}

impl ScalingLayout {
    fn new(points: &[(String, f64, f64)]) -> Self {
        let (w, h) = (640.0, 420.0);
        let (left, right, top, bottom) = (60.0, 30.0, 40.0, 55.0);
        let (xmin, xmax) = points
            .iter()
            .map(|p| p.1.log10())
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let (xmin, xmax) = if xmax > xmin {
            (xmin - 0.1, xmax + 0.1)
        } else {
            (xmin - 1.0, xmax + 1.0)
        };
        let ymax = points.iter().map(|p| p.2).fold(0.0, f64::max).max(1.0) * 1.15;
        Self {
            w,
            h,
            left,
            top,
            pw: w - left - right,
            ph: h - top - bottom,
            xmin,
            xmax,
            ymax,
        }
    }

    fn sx(&self, lx: f64) -> f64 {
        self.left + self.pw * (lx - self.xmin) / (self.xmax - self.xmin)
    }

    fn sy(&self, y: f64) -> f64 {
        self.top + self.ph * (1.0 - y / self.ymax)
    }
}

/// Accuracy against encoder size (log x axis), with the fitted power law when there is one.
pub fn scaling_svg(title: &str, points: &[(String, f64, f64)]) -> String {
    let l = ScalingLayout::new(points);
    let ScalingLayout {
        w,
        h,
        left,
        top,
        pw,
        ph,
        xmin,
        xmax,
        ..
    } = l;
    let sx = |lx: f64| l.sx(lx);
    let sy = |y: f64| l.sy(y);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text><line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
        w / 2.0,
        escape(title),
        top + ph,
        left + pw,
        top + ph,
        top + ph
    );
    for e in (xmin.ceil() as i32)..=(xmax.floor() as i32) {
        let x = sx(e as f64);
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">1e{e}</text>"#,
            top + ph + 18.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">encoder parameters (log scale)</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">accuracy (%)</text>"#,
        left + pw / 2.0,
        h - 12.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    if let Some((a, b)) = fit_power_law(&points.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>()) {
        let path: Vec<String> = (0..=50)
            .map(|i| {
                let lx = xmin + (xmax - xmin) * i as f64 / 50.0;
                format!("{:.1},{:.1}", sx(lx), sy(a * 10f64.powf(lx * b)))
            })
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="#e15759" stroke-dasharray="5,4" points="{}"/><text x="{:.1}" y="{:.1}" fill="#e15759">fit: acc = {a:.3} * N^{b:.4}</text>"##,
            path.join(" "),
            left + 10.0,
            top + 14.0
        );
    }
    for (name, size, acc) in points {
        let (x, y) = (sx(size.log10()), sy(*acc));
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="#4e79a7"/><text x="{:.1}" y="{:.1}">{} ({acc:.1})</text>"##,
            x + 6.0,
            y - 6.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Text scale of the PNG plots: the 5x7 font doubled is about the SVGs' 12px sans-serif.
const SCALE: u32 = 2;
const GRID: Rgb = [0xdd, 0xdd, 0xdd];
const AXIS: Rgb = [0x33, 0x33, 0x33];

fn colour(k: usize) -> Rgb {
    raster::hex(PALETTE[k % PALETTE.len()])
}

/// Draw `s` centred horizontally on `cx` with its top at `y`.
fn text_centred(c: &mut Canvas, cx: f64, y: f64, s: &str, scale: u32, colour: Rgb) {
    c.text(cx - raster::text_width(s, scale) / 2.0, y, s, scale, colour);
}

/// The title as 2x text centred at the top, where the SVG puts its 15px title.
fn title_png(c: &mut Canvas, w: f64, title: &str) {
    text_centred(c, w / 2.0, 10.0, title, SCALE, BLACK);
}

/// "accuracy (%)" reading upwards, centred on the plot's height, like the SVG's rotated label.
fn y_label_png(c: &mut Canvas, top: f64, plot_h: f64) {
    let label = "accuracy (%)";
    let y = top + plot_h / 2.0 + raster::text_width(label, SCALE) / 2.0;
    c.text_up(9.0, y, label, SCALE, BLACK);
}

/// Legend rows: a swatch of the run's colour and its name, shrunk and then cut with ".." to
/// the width available, since run names are free text and the legend column is fixed.
fn legend_png<'a>(
    c: &mut Canvas,
    x: f64,
    y: f64,
    max_w: f64,
    names: impl Iterator<Item = &'a str>,
) {
    for (k, name) in names.enumerate() {
        let yy = y + 18.0 * k as f64;
        c.fill_rect(x, yy, 12.0, 12.0, colour(k));
        let (text, scale) = fit_text(name, max_w);
        let th = raster::text_height(scale);
        c.text(x + 18.0, yy + 6.0 - th / 2.0, &text, scale, BLACK);
    }
}

fn fit_text(s: &str, max_w: f64) -> (String, u32) {
    for scale in [SCALE, 1] {
        if raster::text_width(s, scale) <= max_w {
            return (s.to_string(), scale);
        }
    }
    let mut t = s.to_string();
    while !t.is_empty() && raster::text_width(&format!("{t}.."), 1) > max_w {
        t.pop();
    }
    (format!("{t}.."), 1)
}

/// The bar chart of [`bars_svg`] as PNG: same layout, colours, ticks and legend.
pub fn bars_png(
    title: &str,
    labels: &[&str],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<Vec<u8>> {
    let l = BarsLayout::new(labels.len(), series.len());
    let mut c = Canvas::new(l.w as u32, l.h as u32, WHITE);
    title_png(&mut c, l.w, title);
    let th = raster::text_height(SCALE);
    for tick in (0..=100).step_by(20) {
        let y = l.top + l.plot_h * (1.0 - tick as f64 / 100.0);
        c.line(l.left, y, l.left + l.plot_w, y, 1, GRID);
        let t = tick.to_string();
        c.text(
            l.left - 6.0 - raster::text_width(&t, SCALE),
            y - th / 2.0,
            &t,
            SCALE,
            BLACK,
        );
    }
    for (g, label) in labels.iter().enumerate() {
        let x0 = l.left + g as f64 * l.group_w + l.group_w * 0.1;
        for (k, (_, values)) in series.iter().enumerate() {
            if let Some(Some(v)) = values.get(g) {
                let bh = l.plot_h * v.clamp(0.0, 100.0) / 100.0;
                c.fill_rect(
                    x0 + k as f64 * l.bar_w,
                    l.top + l.plot_h - bh,
                    l.bar_w * 0.95,
                    bh,
                    colour(k),
                );
            }
        }
        let cx = l.left + (g as f64 + 0.5) * l.group_w;
        text_centred(&mut c, cx, l.top + l.plot_h + 8.0, label, SCALE, BLACK);
    }
    y_label_png(&mut c, l.top, l.plot_h);
    let legend_x = l.w - l.right + 15.0;
    legend_png(
        &mut c,
        legend_x,
        l.top,
        l.w - legend_x - 18.0 - 4.0,
        series.iter().map(|(n, _)| n.as_str()),
    );
    c.png()
}

/// The scaling plot of [`scaling_svg`] as PNG: markers with their labels, decade ticks, and the
/// fitted power law as a dashed curve when there is a fit.
pub fn scaling_png(title: &str, points: &[(String, f64, f64)]) -> Result<Vec<u8>> {
    let l = ScalingLayout::new(points);
    let mut c = Canvas::new(l.w as u32, l.h as u32, WHITE);
    title_png(&mut c, l.w, title);
    let (bottom, right) = (l.top + l.ph, l.left + l.pw);
    c.line(l.left, bottom, right, bottom, 1, AXIS);
    c.line(l.left, l.top, l.left, bottom, 1, AXIS);
    for e in (l.xmin.ceil() as i32)..=(l.xmax.floor() as i32) {
        text_centred(
            &mut c,
            l.sx(e as f64),
            bottom + 6.0,
            &format!("1e{e}"),
            SCALE,
            BLACK,
        );
    }
    let x_label = "encoder parameters (log scale)";
    text_centred(
        &mut c,
        l.left + l.pw / 2.0,
        l.h - 24.0,
        x_label,
        SCALE,
        BLACK,
    );
    y_label_png(&mut c, l.top, l.ph);
    if let Some((a, b)) = fit_power_law(&points.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>()) {
        let red = raster::hex("#e15759");
        let curve: Vec<(f64, f64)> = (0..=50)
            .map(|i| {
                let lx = l.xmin + (l.xmax - l.xmin) * i as f64 / 50.0;
                (l.sx(lx), l.sy(a * 10f64.powf(lx * b)))
            })
            .collect();
        c.polyline(&curve, 2, Some((5.0, 4.0)), red);
        let label = format!("fit: acc = {a:.3} * N^{b:.4}");
        c.text(l.left + 10.0, l.top + 2.0, &label, SCALE, red);
    }
    let marker = raster::hex("#4e79a7");
    for (name, size, acc) in points {
        let (x, y) = (l.sx(size.log10()), l.sy(*acc));
        c.circle(x, y, 4.0, marker);
        let label = format!("{name} ({acc:.1})");
        // A label that would run off the right edge (the largest model's) goes left of its dot.
        let tw = raster::text_width(&label, SCALE);
        let lx = if x + 6.0 + tw > l.w {
            x - 6.0 - tw
        } else {
            x + 6.0
        };
        c.text(
            lx,
            y - 6.0 - raster::text_height(SCALE),
            &label,
            SCALE,
            BLACK,
        );
    }
    c.png()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_law_fit_recovers_its_parameters() {
        let pts: Vec<(f64, f64)> = [3.2e6, 1.3e7, 2.5e7, 5.7e7, 3.0e8]
            .iter()
            .map(|&n| (n, 12.0 * f64::powf(n, 0.09)))
            .collect();
        let (a, b) = fit_power_law(&pts).unwrap();
        assert!(
            (a - 12.0).abs() < 1e-6 && (b - 0.09).abs() < 1e-9,
            "{a} {b}"
        );
        assert!(fit_power_law(&[(1e6, 40.0)]).is_none());
    }

    #[test]
    fn svgs_are_well_formed_enough_to_parse() {
        let bars = bars_svg(
            "t<1>",
            &["DF", "MF"],
            &[("run a".into(), vec![Some(50.0), None])],
        );
        assert!(bars.starts_with("<svg") && bars.trim_end().ends_with("</svg>"));
        assert!(bars.contains("t&lt;1&gt;") && bars.matches("<rect").count() == 3);
        let sc = scaling_svg("s", &[("a".into(), 1e6, 40.0), ("b".into(), 1e8, 60.0)]);
        assert!(sc.contains("fit: acc ="));
    }

    /// Pixels of exactly colour `c` in decoded RGB bytes.
    fn count(px: &[u8], c: Rgb) -> usize {
        px.chunks_exact(3).filter(|p| *p == c).count()
    }

    /// Pixels of colour `c` in column `x` of a decoded image `w` wide.
    fn column(px: &[u8], w: usize, x: usize, c: Rgb) -> usize {
        px.chunks_exact(3 * w)
            .filter(|row| row[3 * x..3 * x + 3] == c)
            .count()
    }

    const SWATCH: usize = 12 * 12;

    #[test]
    fn bars_png_decodes_at_the_svg_size_and_bar_area_grows_with_accuracy() {
        let labels = ["DF", "MF", "SU"];
        let mut areas = Vec::new();
        for v in [0.0, 10.0, 35.0, 60.0, 100.0] {
            let series = [("run a".to_string(), vec![Some(v), None, Some(v)])];
            let (w, h, px) = raster::decode_png(&bars_png("t", &labels, &series).unwrap());
            assert_eq!((w, h), (860, 420));
            areas.push(count(&px, colour(0)) - SWATCH);
        }
        assert_eq!(areas[0], 0, "a 0% bar draws nothing");
        assert!(areas.windows(2).all(|a| a[0] < a[1]), "{areas:?}");
        // Two bars of 100% fill the plot's height exactly.
        let l = BarsLayout::new(3, 1);
        let bar_w = (l.bar_w * 0.95).round() as usize;
        let full = 2 * l.plot_h as usize;
        assert!(
            areas[4].abs_diff(full * bar_w) <= full,
            "{} {}",
            areas[4],
            full * bar_w
        );
    }

    #[test]
    fn each_run_keeps_its_colour_and_its_bars_height() {
        let labels = ["DF", "MF"];
        let series = [
            ("high".to_string(), vec![Some(80.0), Some(80.0)]),
            ("low".to_string(), vec![Some(20.0), None]),
        ];
        let (w, _, px) = raster::decode_png(&bars_png("t", &labels, &series).unwrap());
        let (hi, lo) = (
            count(&px, colour(0)) - SWATCH,
            count(&px, colour(1)) - SWATCH,
        );
        // Two bars at 80% against one at 20%: eight times the area, give or take a pixel column.
        let ratio = hi as f64 / lo as f64;
        assert!((ratio - 8.0).abs() < 0.3, "{hi} {lo} {ratio}");
        // Through the middle of the first bar, the run's colour spans 80% of the plot's height.
        let l = BarsLayout::new(2, 2);
        let x = l.left + l.group_w * 0.1 + l.bar_w * 0.95 / 2.0;
        let expected = (l.plot_h * 0.8).round() as usize;
        assert_eq!(column(&px, w as usize, x as usize, colour(0)), expected);
        assert_eq!(column(&px, w as usize, x as usize, colour(1)), 0);
    }

    #[test]
    fn scaling_png_has_markers_and_a_fit_curve_only_when_there_is_a_fit() {
        let pts = [
            ("a".to_string(), 1e6, 40.0),
            ("b".to_string(), 1e7, 50.0),
            ("c".to_string(), 1e8, 60.0),
        ];
        let red = raster::hex("#e15759");
        let marker = raster::hex("#4e79a7");
        let (w, h, px) = raster::decode_png(&scaling_png("s", &pts).unwrap());
        assert_eq!((w, h), (640, 420));
        let disc = std::f64::consts::PI * 16.0;
        let dots = count(&px, marker) as f64;
        assert!((dots - 3.0 * disc).abs() < 3.0 * 8.0, "{dots}");
        assert!(count(&px, red) > 200, "fit curve and its label");
        // One size only: no fit, so nothing in the fit's colour.
        let same = [("a".to_string(), 1e6, 40.0), ("b".to_string(), 1e6, 60.0)];
        let (_, _, px) = raster::decode_png(&scaling_png("s", &same).unwrap());
        assert_eq!(count(&px, red), 0);
        assert!(count(&px, marker) > 0);
    }

    #[test]
    fn long_legend_names_are_shrunk_then_cut() {
        assert_eq!(fit_text("short", 130.0), ("short".to_string(), 2));
        assert_eq!(fit_text("a-bit-longer-name", 130.0).1, 1);
        let (t, scale) = fit_text(&"x".repeat(60), 130.0);
        assert_eq!(scale, 1);
        assert!(
            t.ends_with("..") && raster::text_width(&t, 1) <= 130.0,
            "{t}"
        );
    }
}
