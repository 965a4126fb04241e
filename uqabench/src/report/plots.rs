//! The report's plots, drawn with `plotters` once per figure and rendered twice: to SVG, and to
//! an RGB bitmap that we encode as PNG with the `png` crate (plotters' own encoder would pull in
//! `image`). Per-task accuracy bars for several runs, and accuracy against encoder size with a
//! fitted power law for scaling studies. The SVG and the PNG come from the same drawing code, so
//! the two files show the same picture.
//!
//! Text in the PNG is rasterised by `ab_glyph` from DejaVu Sans, embedded at compile time from
//! the `dejavu` crate (Bitstream Vera licence, permissive; the notice ships in that crate): no
//! system fonts, no fontconfig, nothing read at run time, and the same bytes on every machine.
//! The SVG names the family `sans-serif` and lets the viewer pick its own.

use std::ops::Range;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::error::{QaError, Result};

const PALETTE: [RGBColor; 8] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0x9c, 0x75, 0x5f),
];
const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
const MARKER: RGBColor = PALETTE[0];
const FIT: RGBColor = PALETTE[2];

/// The family every text style asks for; [`font_ready`] registers DejaVu Sans under it.
const FONT: &str = "sans-serif";
/// Plotters sizes text 1.24 times the em it writes into the SVG (`font-size = size / 1.24`), so
/// these are 12px labels and a 15px title, as in the report's earlier hand-written SVGs.
const TEXT: f64 = 15.0;
const TITLE: f64 = 18.6;
/// Legend names that do not fit are drawn at this size, then cut (see [`fit_text`]).
const TEXT_SMALL: f64 = 11.0;

pub const BARS_SIZE: (u32, u32) = (860, 420);
pub const SCALING_SIZE: (u32, u32) = (640, 420);
/// The bar chart's legend column, right of the plot.
const LEGEND_W: u32 = 170;

/// Register the embedded font once per process. Text layout needs it for both backends: the
/// SVG backend writes `<text>` elements but plotters still measures labels to place the axes.
fn font_ready() -> Result<()> {
    static READY: OnceLock<bool> = OnceLock::new();
    let ok = *READY
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(QaError::Invalid(
            "the embedded DejaVu Sans font could not be parsed".into(),
        ))
    }
}

fn plot_error(e: impl std::fmt::Display) -> QaError {
    QaError::Invalid(format!("drawing a plot: {e}"))
}

type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn svg(
    size: (u32, u32),
    draw: impl for<'b> FnOnce(&DrawingArea<SVGBackend<'b>, Shift>) -> Drawn<SVGBackend<'b>>,
) -> Result<String> {
    font_ready()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        draw(&root).map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(out)
}

fn png(
    (w, h): (u32, u32),
    draw: impl for<'b> FnOnce(&DrawingArea<BitMapBackend<'b>, Shift>) -> Drawn<BitMapBackend<'b>>,
) -> Result<Vec<u8>> {
    font_ready()?;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root).map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    // 8-bit RGB at the default compression: flat plot colours compress to a few tens of KiB.
    let mut out = Vec::new();
    let err = |e: png::EncodingError| QaError::Invalid(format!("PNG encoding: {e}"));
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(&rgb).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

/// A linear axis with its ticks exactly where the figure wants them (group centres, decades,
/// steps of 20%), labelled by the mesh's formatter. Plotters' `with_key_points` does the same
/// but drops the label formatting that `configure_mesh` needs for `f64`.
struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(range: Range<f64>, ticks: impl IntoIterator<Item = f64>) -> Self {
        let ticks = ticks.into_iter().collect();
        Self { range, ticks }
    }
}

impl Ranged for Axis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, v: &f64, (lo, hi): (i32, i32)) -> i32 {
        let (a, b) = (self.range.start, self.range.end);
        let t = if b > a { (v - a) / (b - a) } else { 0.0 };
        lo + ((hi - lo) as f64 * t).round() as i32
    }

    /// Only bold ticks: no light grid lines between them.
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// Grouped bars: one group per label (sub-task), one bar per series (run). Values in percent.
pub fn bars_svg(
    title: &str,
    labels: &[&str],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<String> {
    svg(BARS_SIZE, |root| draw_bars(root, title, labels, series))
}

/// The bar chart of [`bars_svg`] as PNG.
pub fn bars_png(
    title: &str,
    labels: &[&str],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<Vec<u8>> {
    png(BARS_SIZE, |root| draw_bars(root, title, labels, series))
}

/// Accuracy against encoder size (log x axis), with the fitted power law when there is one.
/// Points are `(name, encoder parameters, accuracy in percent)`.
pub fn scaling_svg(title: &str, points: &[(String, f64, f64)]) -> Result<String> {
    svg(SCALING_SIZE, |root| draw_scaling(root, title, points))
}

/// The scaling plot of [`scaling_svg`] as PNG.
pub fn scaling_png(title: &str, points: &[(String, f64, f64)]) -> Result<Vec<u8>> {
    png(SCALING_SIZE, |root| draw_scaling(root, title, points))
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    labels: &[&str],
    series: &[(String, Vec<Option<f64>>)],
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let body = root.titled(title, (FONT, TITLE))?;
    let (plot, legend) = body.split_horizontally(body.dim_in_pixel().0.saturating_sub(LEGEND_W));
    // Group g spans [g, g + 1) on x; its label sits at the centre, its bars fill the middle 80%.
    let groups = labels.len().max(1) as f64;
    let centres = (0..labels.len()).map(|g| g as f64 + 0.5);
    let ticks = (0..=100).step_by(20).map(f64::from);
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(50)
        .build_cartesian_2d(
            Axis::new(0.0..groups, centres),
            Axis::new(0.0..100.0, ticks),
        )?;
    let task = |x: &f64| labels.get(x.floor() as usize).map_or("", |l| l).to_string();
    let percent = |y: &f64| format!("{y:.0}");
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(GRID)
        .x_label_formatter(&task)
        .y_label_formatter(&percent)
        .y_desc("accuracy (%)")
        .label_style((FONT, TEXT))
        .axis_desc_style((FONT, TEXT))
        .draw()?;
    let bar_w = 0.8 / series.len().max(1) as f64;
    for (k, (_, values)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()].filled();
        // A bar of 0% (or a missing or NaN value) draws nothing, not a one-pixel sliver.
        let bars = values
            .iter()
            .take(labels.len())
            .enumerate()
            .filter_map(|(g, v)| Some((g, v.filter(|v| *v > 0.0)?.min(100.0))))
            .map(|(g, v)| {
                let x0 = g as f64 + 0.1 + k as f64 * bar_w;
                Rectangle::new([(x0, 0.0), (x0 + bar_w * 0.95, v)], colour)
            });
        chart.draw_series(bars)?;
    }
    let (swatch_x, top) = (15, 10);
    let max_w = LEGEND_W as i32 - swatch_x - 18 - 4;
    for (k, (name, _)) in series.iter().enumerate() {
        let y = top + 18 * k as i32;
        legend.draw(&Rectangle::new(
            [(swatch_x, y), (swatch_x + 12, y + 12)],
            PALETTE[k % PALETTE.len()].filled(),
        ))?;
        let (text, size) = fit_text(name, max_w.max(0) as u32);
        let style = (FONT, size)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        legend.draw_text(&text, &style, (swatch_x + 18, y + 6))?;
    }
    Ok(())
}

/// Width in pixels of `s` at plotters font size `size`, as both backends lay it out.
fn text_width(s: &str, size: f64) -> u32 {
    (FONT, size).into_font().box_size(s).map_or(0, |(w, _)| w)
}

/// A legend name that fits `max_w` pixels: as it is, else smaller, else cut with "..". Run
/// names are free text and the legend column is fixed.
fn fit_text(s: &str, max_w: u32) -> (String, f64) {
    for size in [TEXT, TEXT_SMALL] {
        if text_width(s, size) <= max_w {
            return (s.to_string(), size);
        }
    }
    let mut t = s.to_string();
    while !t.is_empty() && text_width(&format!("{t}.."), TEXT_SMALL) > max_w {
        t.pop();
    }
    (format!("{t}.."), TEXT_SMALL)
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

/// The scaling plot's axes: log10(size) with a margin on x, accuracy from 0 on y.
fn scaling_ranges(points: &[(String, f64, f64)]) -> (f64, f64, f64) {
    let (xmin, xmax) = points
        .iter()
        .map(|p| p.1.log10())
        .filter(|x| x.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmax > xmin {
        (xmin - 0.1, xmax + 0.1)
    } else if xmax == xmin {
        (xmin - 1.0, xmax + 1.0)
    } else {
        // No positive size at all: an empty decade keeps the axis drawable.
        (0.0, 1.0)
    };
    let ymax = points.iter().map(|p| p.2).fold(0.0, f64::max).max(1.0) * 1.15;
    (xmin, xmax, ymax)
}

fn draw_scaling<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    points: &[(String, f64, f64)],
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let body = root.titled(title, (FONT, TITLE))?;
    let (xmin, xmax, ymax) = scaling_ranges(points);
    let decades = ((xmin.ceil() as i32)..=(xmax.floor() as i32)).map(f64::from);
    // Ticks on y every 10% (5% when the best run is under 30%), like the bars' grid.
    let step = if ymax > 35.0 { 10 } else { 5 };
    let ticks = (0..)
        .map(|i| f64::from(i * step))
        .take_while(|y| *y <= ymax);
    let mut chart = ChartBuilder::on(&body)
        .margin(10)
        .margin_right(30)
        .x_label_area_size(45)
        .y_label_area_size(50)
        .build_cartesian_2d(Axis::new(xmin..xmax, decades), Axis::new(0.0..ymax, ticks))?;
    let decade = |e: &f64| format!("1e{}", e.round() as i32);
    let percent = |y: &f64| format!("{y:.0}");
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(GRID)
        .x_label_formatter(&decade)
        .y_label_formatter(&percent)
        .x_desc("encoder parameters (log scale)")
        .y_desc("accuracy (%)")
        .label_style((FONT, TEXT))
        .axis_desc_style((FONT, TEXT))
        .draw()?;
    if let Some((a, b)) = fit_power_law(&points.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>()) {
        let curve: Vec<(f64, f64)> = (0..=50)
            .map(|i| {
                let lx = xmin + (xmax - xmin) * i as f64 / 50.0;
                (lx, a * 10f64.powf(lx * b))
            })
            .collect();
        chart.draw_series(std::iter::once(DashedPathElement::new(
            curve,
            5,
            4,
            FIT.stroke_width(2),
        )))?;
        let label = format!("fit: acc = {a:.3} * N^{b:.4}");
        let style = (FONT, TEXT).into_font().color(&FIT);
        chart.draw_series(std::iter::once(
            EmptyElement::at((xmin, ymax)) + Text::new(label, (10, 4), style),
        ))?;
    }
    let width = root.dim_in_pixel().0 as i32;
    for (name, size, acc) in points {
        let at = (size.log10(), *acc);
        let label = format!("{name} ({acc:.1})");
        // A label that would run off the right edge (the largest model's) goes left of its dot.
        let tw = text_width(&label, TEXT) as i32;
        let dx = if chart.backend_coord(&at).0 + 6 + tw > width {
            -6 - tw
        } else {
            6
        };
        let style = (FONT, TEXT)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Bottom));
        chart.draw_series(std::iter::once(
            EmptyElement::at(at)
                + Circle::new((0, 0), 4, MARKER.filled())
                + Text::new(label, (dx, -6), style),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rgb = [u8; 3];

    fn rgb(c: RGBColor) -> Rgb {
        [c.0, c.1, c.2]
    }

    /// Width, height and RGB bytes of a PNG we wrote.
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut px = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut px).unwrap();
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        px.truncate(info.buffer_size());
        (info.width, info.height, px)
    }

    /// Pixels of exactly colour `c` in decoded RGB bytes.
    fn count(px: &[u8], c: Rgb) -> usize {
        px.chunks_exact(3).filter(|p| *p == c).count()
    }

    /// The tallest run of colour `c` down any one column of an image `w` wide: a bar's height.
    fn tallest(px: &[u8], w: usize, c: Rgb) -> usize {
        let rows: Vec<&[u8]> = px.chunks_exact(3 * w).collect();
        (0..w)
            .map(|x| rows.iter().filter(|row| row[3 * x..3 * x + 3] == c).count())
            .max()
            .unwrap_or(0)
    }

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
    fn svgs_carry_the_title_labels_runs_and_one_colour_per_run() {
        let bars = bars_svg(
            "t<1>",
            &["DF", "MF"],
            &[
                ("run a".into(), vec![Some(50.0), None]),
                ("run b".into(), vec![Some(30.0), Some(70.0)]),
            ],
        )
        .unwrap();
        assert!(bars.starts_with("<svg") && bars.trim_end().ends_with("</svg>"));
        assert!(bars.contains("t&lt;1&gt;"), "the title, escaped");
        for text in ["DF", "MF", "run a", "run b", "accuracy (%)"] {
            assert!(bars.contains(&format!(">\n{text}\n</text>")), "{text}");
        }
        // Each run's colour: its bars and its legend swatch (run a has one bar, run b two).
        let fills = |c: RGBColor| {
            bars.matches(&format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2))
                .count()
        };
        assert_eq!((fills(PALETTE[0]), fills(PALETTE[1])), (2, 3));

        let sc = scaling_svg("s", &[("a".into(), 1e6, 40.0), ("b".into(), 1e8, 60.0)]).unwrap();
        assert!(sc.contains("fit: acc ="));
        for text in ["a (40.0)", "b (60.0)", "1e6", "1e7", "1e8"] {
            assert!(sc.contains(&format!(">\n{text}\n</text>")), "{text}");
        }
        assert_eq!(sc.matches("<circle").count(), 2);
    }

    #[test]
    fn pngs_are_deterministic() {
        let series = [("run a".to_string(), vec![Some(42.0), Some(17.5)])];
        let a = bars_png("t", &["DF", "MF"], &series).unwrap();
        assert_eq!(a, bars_png("t", &["DF", "MF"], &series).unwrap());
        let pts = [("a".to_string(), 1e6, 40.0), ("b".to_string(), 1e8, 60.0)];
        assert_eq!(
            scaling_png("s", &pts).unwrap(),
            scaling_png("s", &pts).unwrap()
        );
    }

    /// Pixels of a legend swatch: the one thing a run with no values draws in its colour.
    fn swatch() -> usize {
        let series = [("run a".to_string(), vec![None; 2])];
        let (_, _, px) = decode(&bars_png("t", &["DF", "MF"], &series).unwrap());
        count(&px, rgb(PALETTE[0]))
    }

    #[test]
    fn bars_png_decodes_at_the_svg_size_and_bar_area_grows_with_accuracy() {
        let labels = ["DF", "MF", "SU"];
        let swatch = swatch();
        assert!(swatch >= 12 * 12, "the legend swatch: {swatch}");
        let mut areas = Vec::new();
        let mut heights = Vec::new();
        for v in [0.0, 10.0, 35.0, 60.0, 100.0] {
            let series = [("run a".to_string(), vec![Some(v), None, Some(v)])];
            let (w, h, px) = decode(&bars_png("t", &labels, &series).unwrap());
            assert_eq!((w, h), BARS_SIZE);
            areas.push(count(&px, rgb(PALETTE[0])) - swatch);
            heights.push(tallest(&px, w as usize, rgb(PALETTE[0])));
        }
        assert_eq!(areas[0], 0, "a 0% bar draws nothing");
        assert!(areas.windows(2).all(|a| a[0] < a[1]), "{areas:?}");
        // Heights are proportional to accuracy, to a pixel of rounding.
        for (v, h) in [(10.0, heights[1]), (35.0, heights[2]), (60.0, heights[3])] {
            let expected = heights[4] as f64 * v / 100.0;
            assert!((h as f64 - expected).abs() <= 1.5, "{v}: {h} vs {expected}");
        }
    }

    #[test]
    fn each_run_keeps_its_colour_and_its_bars_height() {
        let labels = ["DF", "MF"];
        let series = [
            ("high".to_string(), vec![Some(80.0), Some(80.0)]),
            ("low".to_string(), vec![Some(20.0), None]),
        ];
        let (w, _, px) = decode(&bars_png("t", &labels, &series).unwrap());
        let swatch = swatch();
        let (hi, lo) = (
            count(&px, rgb(PALETTE[0])) - swatch,
            count(&px, rgb(PALETTE[1])) - swatch,
        );
        // Two bars at 80% against one at 20%: eight times the area, give or take a pixel row.
        let ratio = hi as f64 / lo as f64;
        assert!((ratio - 8.0).abs() < 0.3, "{hi} {lo} {ratio}");
        let (h_hi, h_lo) = (
            tallest(&px, w as usize, rgb(PALETTE[0])),
            tallest(&px, w as usize, rgb(PALETTE[1])),
        );
        let ratio = h_hi as f64 / h_lo as f64;
        assert!((ratio - 4.0).abs() < 0.1, "{h_hi} {h_lo}");
    }

    #[test]
    fn scaling_png_has_markers_and_a_fit_curve_only_when_there_is_a_fit() {
        let pts = [
            ("a".to_string(), 1e6, 40.0),
            ("b".to_string(), 1e7, 50.0),
            ("c".to_string(), 1e8, 60.0),
        ];
        let (w, h, px) = decode(&scaling_png("s", &pts).unwrap());
        assert_eq!((w, h), SCALING_SIZE);
        let disc = std::f64::consts::PI * 16.0;
        let dots = count(&px, rgb(MARKER)) as f64;
        assert!((dots - 3.0 * disc).abs() < 3.0 * 12.0, "{dots}");
        assert!(count(&px, rgb(FIT)) > 200, "fit curve and its label");
        // One size only: no fit, so nothing in the fit's colour.
        let same = [("a".to_string(), 1e6, 40.0), ("b".to_string(), 1e6, 60.0)];
        let (_, _, px) = decode(&scaling_png("s", &same).unwrap());
        assert_eq!(count(&px, rgb(FIT)), 0);
        assert!(count(&px, rgb(MARKER)) > 0);
    }

    #[test]
    fn long_legend_names_are_shrunk_then_cut() {
        assert_eq!(fit_text("short", 130), ("short".to_string(), TEXT));
        assert_eq!(fit_text("a-bit-longer-run-name", 130).1, TEXT_SMALL);
        let (t, size) = fit_text(&"x".repeat(60), 130);
        assert_eq!(size, TEXT_SMALL);
        assert!(
            t.ends_with("..") && text_width(&t, TEXT_SMALL) <= 130,
            "{t}"
        );
    }
}
