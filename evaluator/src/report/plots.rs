//! SVG plots, written by hand (no plotting dependency): per-task accuracy bars for several runs,
//! and accuracy against encoder size with a fitted power law for scaling studies.

use std::fmt::Write;

const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Grouped bars: one group per label (sub-task), one bar per series (run). Values in percent.
pub fn bars_svg(title: &str, labels: &[&str], series: &[(String, Vec<Option<f64>>)]) -> String {
    let (w, h) = (860.0, 420.0);
    let (left, right, top, bottom) = (60.0, 170.0, 40.0, 50.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let group_w = plot_w / labels.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
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

/// Accuracy against encoder size (log x axis), with the fitted power law when there is one.
pub fn scaling_svg(title: &str, points: &[(String, f64, f64)]) -> String {
    let (w, h) = (640.0, 420.0);
    let (left, right, top, bottom) = (60.0, 30.0, 40.0, 55.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let xs: Vec<f64> = points.iter().map(|p| p.1.log10()).collect();
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmax > xmin {
        (xmin - 0.1, xmax + 0.1)
    } else {
        (xmin - 1.0, xmax + 1.0)
    };
    let ys: Vec<f64> = points.iter().map(|p| p.2).collect();
    let ymax = ys.iter().copied().fold(0.0, f64::max).max(1.0) * 1.15;
    let sx = |lx: f64| left + pw * (lx - xmin) / (xmax - xmin);
    let sy = |y: f64| top + ph * (1.0 - y / ymax);
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
}
