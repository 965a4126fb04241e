//! A small RGB rasteriser for the report's PNG plots: filled rectangles, lines (solid or dashed,
//! any width), filled circles and text from an embedded 5x7 bitmap font, encoded with the `png`
//! crate. The font is built in because CI machines have no system fonts, and pulling in a font
//! stack (fontconfig, a TrueType rasteriser) for tick labels would be out of all proportion.

use crate::error::{EvalError, Result};

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];

/// Glyph cell of the embedded font, in font pixels; one blank column separates glyphs.
pub const GLYPH_W: i64 = 5;
pub const GLYPH_H: i64 = 7;
const ADVANCE: i64 = GLYPH_W + 1;

/// `#rrggbb` to RGB, so the PNG plots take their colours from the same palette as the SVGs.
/// Anything malformed is black: the palette is ours and tested, so this never hides user input.
pub fn hex(s: &str) -> Rgb {
    let s = s.trim_start_matches('#');
    let byte = |i: usize| {
        s.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    if s.len() == 6 {
        [byte(0), byte(2), byte(4)]
    } else {
        BLACK
    }
}

/// An RGB image, row-major, 3 bytes a pixel. Drawing outside the canvas is clipped silently,
/// because plot labels (long run names) may run past an edge and that must not fail a report.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32, background: Rgb) -> Self {
        let pixels = background
            .iter()
            .copied()
            .cycle()
            .take(width as usize * height as usize * 3)
            .collect();
        Self {
            width,
            height,
            pixels,
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The raw RGB bytes, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    pub fn get(&self, x: i64, y: i64) -> Option<Rgb> {
        let i = self.index(x, y)?;
        Some([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }

    /// How many pixels have exactly this colour (the tests' way to measure what was drawn).
    pub fn count(&self, c: Rgb) -> usize {
        self.pixels.chunks_exact(3).filter(|p| *p == c).count()
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        (x >= 0 && y >= 0 && x < self.width as i64 && y < self.height as i64)
            .then(|| (y as usize * self.width as usize + x as usize) * 3)
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(i) = self.index(x, y) {
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Fill the pixels whose centres lie in `[x, x + w) x [y, y + h)`: adjacent rectangles then
    /// neither overlap nor leave gaps, and a bar's pixel height is its value's height rounded.
    pub fn fill_rect(&mut self, x: f64, y: f64, w: f64, h: f64, c: Rgb) {
        let (x0, x1) = ((x - 0.5).ceil() as i64, (x + w - 0.5).ceil() as i64);
        let (y0, y1) = ((y - 0.5).ceil() as i64, (y + h - 0.5).ceil() as i64);
        for yy in y0.max(0)..y1.min(self.height as i64) {
            for xx in x0.max(0)..x1.min(self.width as i64) {
                self.set(xx, yy, c);
            }
        }
    }

    /// A square brush of side `width` centred on (x, y).
    fn stamp(&mut self, x: f64, y: f64, width: u32, c: Rgb) {
        let half = (width as f64 - 1.0) / 2.0;
        let (x0, y0) = ((x - half).round() as i64, (y - half).round() as i64);
        for dy in 0..width as i64 {
            for dx in 0..width as i64 {
                self.set(x0 + dx, y0 + dy, c);
            }
        }
    }

    pub fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, width: u32, c: Rgb) {
        self.polyline(&[(x0, y0), (x1, y1)], width, None, c);
    }

    /// Connected segments; `dash = Some((on, off))` in pixels along the path, continuing across
    /// vertices so a curve sampled densely still looks evenly dashed (as SVG's dasharray does).
    pub fn polyline(&mut self, pts: &[(f64, f64)], width: u32, dash: Option<(f64, f64)>, c: Rgb) {
        let mut travelled = 0.0;
        for seg in pts.windows(2) {
            let ((xa, ya), (xb, yb)) = (seg[0], seg[1]);
            if ![xa, ya, xb, yb].iter().all(|v| v.is_finite()) {
                continue;
            }
            let len = ((xb - xa).powi(2) + (yb - ya).powi(2)).sqrt();
            // Half-pixel steps so diagonal lines have no holes.
            let steps = (len * 2.0).ceil().max(1.0) as usize;
            for i in 0..=steps {
                let t = i as f64 / steps as f64;
                let on = dash.is_none_or(|(on, off)| (travelled + t * len) % (on + off) < on);
                if on {
                    self.stamp(xa + t * (xb - xa), ya + t * (yb - ya), width, c);
                }
            }
            travelled += len;
        }
    }

    /// A filled disc: the plots' markers.
    pub fn circle(&mut self, cx: f64, cy: f64, r: f64, c: Rgb) {
        let (y0, y1) = ((cy - r).floor() as i64, (cy + r).ceil() as i64);
        let (x0, x1) = ((cx - r).floor() as i64, (cx + r).ceil() as i64);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                if dx * dx + dy * dy <= r * r {
                    self.set(x, y, c);
                }
            }
        }
    }

    /// Text with its top-left corner at (x, y), each font pixel drawn as a `scale` x `scale`
    /// block. Returns the width drawn.
    pub fn text(&mut self, x: f64, y: f64, s: &str, scale: u32, c: Rgb) -> f64 {
        let (x, y, k) = (x.round() as i64, y.round() as i64, scale as i64);
        self.glyphs(s, |this, gx, gy| {
            for dy in 0..k {
                for dx in 0..k {
                    this.set(x + gx * k + dx, y + gy * k + dy, c);
                }
            }
        });
        text_width(s, scale)
    }

    /// Text rotated a quarter turn anticlockwise (reading upwards), with the start of the
    /// string at the bottom: the y-axis label. (x, y) is the bottom-left corner.
    pub fn text_up(&mut self, x: f64, y: f64, s: &str, scale: u32, c: Rgb) {
        let (x, y, k) = (x.round() as i64, y.round() as i64, scale as i64);
        self.glyphs(s, |this, gx, gy| {
            for dy in 0..k {
                for dx in 0..k {
                    this.set(x + gy * k + dx, y - gx * k - dy - 1, c);
                }
            }
        });
    }

    /// Calls `put(self, gx, gy)` for every lit font pixel of `s`, in font-pixel coordinates
    /// from the string's top-left corner.
    fn glyphs(&mut self, s: &str, mut put: impl FnMut(&mut Self, i64, i64)) {
        for (i, ch) in s.chars().enumerate() {
            let cols = glyph(ch);
            for (col, bits) in cols.iter().enumerate() {
                for row in 0..GLYPH_H {
                    if (bits >> row) & 1 == 1 {
                        put(self, i as i64 * ADVANCE + col as i64, row);
                    }
                }
            }
        }
    }

    /// PNG bytes (8-bit RGB, default compression: flat plot colours compress to a few KiB).
    pub fn png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let err = |e: png::EncodingError| EvalError::Invalid(format!("PNG encoding: {e}"));
        let mut enc = png::Encoder::new(&mut out, self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(&self.pixels).map_err(err)?;
        writer.finish().map_err(err)?;
        Ok(out)
    }
}

/// Width in pixels of `s` drawn at `scale` (no trailing gap after the last glyph).
pub fn text_width(s: &str, scale: u32) -> f64 {
    let n = s.chars().count() as i64;
    ((n * ADVANCE - 1).max(0) * scale as i64) as f64
}

/// Height in pixels of a line of text at `scale`.
pub fn text_height(scale: u32) -> f64 {
    (GLYPH_H * scale as i64) as f64
}

/// Column bitmaps of a character (bit 0 is the top row). Anything outside printable ASCII is
/// a hollow box, so a non-ASCII run name shows that characters are missing rather than
/// silently vanishing or reading as a literal '?'.
fn glyph(ch: char) -> [u8; 5] {
    const BOX: [u8; 5] = [0x7F, 0x41, 0x41, 0x41, 0x7F];
    match ch {
        ' '..='~' => FONT[ch as usize - 0x20],
        _ => BOX,
    }
}

/// The classic 5x7 ASCII font, 0x20 (space) to 0x7E (~), five columns a glyph.
#[rustfmt::skip]
const FONT: [[u8; 5]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x00, 0x00, 0x5F, 0x00, 0x00], // !
    [0x00, 0x07, 0x00, 0x07, 0x00], // "
    [0x14, 0x7F, 0x14, 0x7F, 0x14], // #
    [0x24, 0x2A, 0x7F, 0x2A, 0x12], // $
    [0x23, 0x13, 0x08, 0x64, 0x62], // %
    [0x36, 0x49, 0x55, 0x22, 0x50], // &
    [0x00, 0x05, 0x03, 0x00, 0x00], // '
    [0x00, 0x1C, 0x22, 0x41, 0x00], // (
    [0x00, 0x41, 0x22, 0x1C, 0x00], // )
    [0x08, 0x2A, 0x1C, 0x2A, 0x08], // *
    [0x08, 0x08, 0x3E, 0x08, 0x08], // +
    [0x00, 0x50, 0x30, 0x00, 0x00], // ,
    [0x08, 0x08, 0x08, 0x08, 0x08], // -
    [0x00, 0x60, 0x60, 0x00, 0x00], // .
    [0x20, 0x10, 0x08, 0x04, 0x02], // /
    [0x3E, 0x51, 0x49, 0x45, 0x3E], // 0
    [0x00, 0x42, 0x7F, 0x40, 0x00], // 1
    [0x42, 0x61, 0x51, 0x49, 0x46], // 2
    [0x21, 0x41, 0x45, 0x4B, 0x31], // 3
    [0x18, 0x14, 0x12, 0x7F, 0x10], // 4
    [0x27, 0x45, 0x45, 0x45, 0x39], // 5
    [0x3C, 0x4A, 0x49, 0x49, 0x30], // 6
    [0x01, 0x71, 0x09, 0x05, 0x03], // 7
    [0x36, 0x49, 0x49, 0x49, 0x36], // 8
    [0x06, 0x49, 0x49, 0x29, 0x1E], // 9
    [0x00, 0x36, 0x36, 0x00, 0x00], // :
    [0x00, 0x56, 0x36, 0x00, 0x00], // ;
    [0x08, 0x14, 0x22, 0x41, 0x00], // <
    [0x14, 0x14, 0x14, 0x14, 0x14], // =
    [0x00, 0x41, 0x22, 0x14, 0x08], // >
    [0x02, 0x01, 0x51, 0x09, 0x06], // ?
    [0x32, 0x49, 0x79, 0x41, 0x3E], // @
    [0x7E, 0x11, 0x11, 0x11, 0x7E], // A
    [0x7F, 0x49, 0x49, 0x49, 0x36], // B
    [0x3E, 0x41, 0x41, 0x41, 0x22], // C
    [0x7F, 0x41, 0x41, 0x22, 0x1C], // D
    [0x7F, 0x49, 0x49, 0x49, 0x41], // E
    [0x7F, 0x09, 0x09, 0x09, 0x01], // F
    [0x3E, 0x41, 0x49, 0x49, 0x7A], // G
    [0x7F, 0x08, 0x08, 0x08, 0x7F], // H
    [0x00, 0x41, 0x7F, 0x41, 0x00], // I
    [0x20, 0x40, 0x41, 0x3F, 0x01], // J
    [0x7F, 0x08, 0x14, 0x22, 0x41], // K
    [0x7F, 0x40, 0x40, 0x40, 0x40], // L
    [0x7F, 0x02, 0x0C, 0x02, 0x7F], // M
    [0x7F, 0x04, 0x08, 0x10, 0x7F], // N
    [0x3E, 0x41, 0x41, 0x41, 0x3E], // O
    [0x7F, 0x09, 0x09, 0x09, 0x06], // P
    [0x3E, 0x41, 0x51, 0x21, 0x5E], // Q
    [0x7F, 0x09, 0x19, 0x29, 0x46], // R
    [0x46, 0x49, 0x49, 0x49, 0x31], // S
    [0x01, 0x01, 0x7F, 0x01, 0x01], // T
    [0x3F, 0x40, 0x40, 0x40, 0x3F], // U
    [0x1F, 0x20, 0x40, 0x20, 0x1F], // V
    [0x3F, 0x40, 0x38, 0x40, 0x3F], // W
    [0x63, 0x14, 0x08, 0x14, 0x63], // X
    [0x07, 0x08, 0x70, 0x08, 0x07], // Y
    [0x61, 0x51, 0x49, 0x45, 0x43], // Z
    [0x00, 0x7F, 0x41, 0x41, 0x00], // [
    [0x02, 0x04, 0x08, 0x10, 0x20], // backslash
    [0x00, 0x41, 0x41, 0x7F, 0x00], // ]
    [0x04, 0x02, 0x01, 0x02, 0x04], // ^
    [0x40, 0x40, 0x40, 0x40, 0x40], // _
    [0x00, 0x01, 0x02, 0x04, 0x00], // `
    [0x20, 0x54, 0x54, 0x54, 0x78], // a
    [0x7F, 0x48, 0x44, 0x44, 0x38], // b
    [0x38, 0x44, 0x44, 0x44, 0x20], // c
    [0x38, 0x44, 0x44, 0x48, 0x7F], // d
    [0x38, 0x54, 0x54, 0x54, 0x18], // e
    [0x08, 0x7E, 0x09, 0x01, 0x02], // f
    [0x0C, 0x52, 0x52, 0x52, 0x3E], // g
    [0x7F, 0x08, 0x04, 0x04, 0x78], // h
    [0x00, 0x44, 0x7D, 0x40, 0x00], // i
    [0x20, 0x40, 0x44, 0x3D, 0x00], // j
    [0x7F, 0x10, 0x28, 0x44, 0x00], // k
    [0x00, 0x41, 0x7F, 0x40, 0x00], // l
    [0x7C, 0x04, 0x18, 0x04, 0x78], // m
    [0x7C, 0x08, 0x04, 0x04, 0x78], // n
    [0x38, 0x44, 0x44, 0x44, 0x38], // o
    [0x7C, 0x14, 0x14, 0x14, 0x08], // p
    [0x08, 0x14, 0x14, 0x18, 0x7C], // q
    [0x7C, 0x08, 0x04, 0x04, 0x08], // r
    [0x48, 0x54, 0x54, 0x54, 0x20], // s
    [0x04, 0x3F, 0x44, 0x40, 0x20], // t
    [0x3C, 0x40, 0x40, 0x20, 0x7C], // u
    [0x1C, 0x20, 0x40, 0x20, 0x1C], // v
    [0x3C, 0x40, 0x30, 0x40, 0x3C], // w
    [0x44, 0x28, 0x10, 0x28, 0x44], // x
    [0x0C, 0x50, 0x50, 0x50, 0x3C], // y
    [0x44, 0x64, 0x54, 0x4C, 0x44], // z
    [0x00, 0x08, 0x36, 0x41, 0x00], // {
    [0x00, 0x00, 0x7F, 0x00, 0x00], // |
    [0x00, 0x41, 0x36, 0x08, 0x00], // }
    [0x08, 0x04, 0x08, 0x10, 0x08], // ~
];

#[cfg(test)]
/// Decode with the `png` crate's decoder: an independent check of what we wrote.
pub(crate) fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight)
    );
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lit pixels of a canvas region as text rows, for readable glyph assertions.
    fn art(c: &Canvas, w: i64, h: i64) -> Vec<String> {
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| if c.get(x, y) == Some(BLACK) { '#' } else { '.' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn png_round_trips_every_pixel_and_the_size() {
        let mut c = Canvas::new(37, 23, WHITE);
        // Varied content so every PNG filter type and long and short matches get exercised.
        for y in 0..23 {
            for x in 0..37 {
                if (x * y) % 7 == 0 {
                    c.set(x, y, [(x * 7) as u8, (y * 11) as u8, ((x + y) * 3) as u8]);
                }
            }
        }
        c.fill_rect(3.0, 4.0, 20.0, 5.0, hex("#4e79a7"));
        let bytes = c.png().unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h, px) = decode_png(&bytes);
        assert_eq!((w, h), (37, 23));
        assert_eq!(px, c.pixels());
    }

    #[test]
    fn glyphs_come_from_the_embedded_font_and_scale() {
        let mut c = Canvas::new(20, 10, WHITE);
        assert_eq!(c.text(0.0, 0.0, "T1", 1, BLACK), 11.0);
        assert_eq!(
            art(&c, 11, 7),
            [
                "#####...#..",
                "..#....##..",
                "..#.....#..",
                "..#.....#..",
                "..#.....#..",
                "..#.....#..",
                "..#....###",
            ]
            .map(|r| format!("{r:.<11}"))
        );
        let mut big = Canvas::new(40, 20, WHITE);
        big.text(0.0, 0.0, "T1", 2, BLACK);
        assert_eq!(big.count(BLACK), 4 * c.count(BLACK));
        assert_eq!(text_width("T1", 2), 22.0);
        assert_eq!(text_height(2), 14.0);
    }

    #[test]
    fn non_ascii_is_a_hollow_box_not_nothing() {
        let mut c = Canvas::new(12, 8, WHITE);
        c.text(0.0, 0.0, "\u{7528}", 1, BLACK);
        assert_eq!(c.count(BLACK), 7 + 3 * 2 + 7);
        assert_eq!(c.get(2, 3), Some(WHITE));
        assert_eq!(text_width("\u{7528}\u{6237}", 1), 11.0);
    }

    #[test]
    fn vertical_text_is_the_horizontal_text_turned() {
        let mut flat = Canvas::new(40, 40, WHITE);
        let mut up = Canvas::new(40, 40, WHITE);
        flat.text(0.0, 0.0, "acc (%)", 1, BLACK);
        up.text_up(0.0, 40.0, "acc (%)", 1, BLACK);
        assert_eq!(flat.count(BLACK), up.count(BLACK));
        for y in 0..7 {
            for x in 0..40 {
                assert_eq!(flat.get(x, y), up.get(y, 39 - x), "({x},{y})");
            }
        }
    }

    #[test]
    fn rectangles_tile_without_gaps_or_overlap_and_clip() {
        let mut c = Canvas::new(10, 10, WHITE);
        let (a, b) = ([1, 0, 0], [0, 1, 0]);
        c.fill_rect(0.0, 0.0, 3.4, 10.0, a);
        c.fill_rect(3.4, 0.0, 3.4, 10.0, b);
        assert_eq!(c.count(a) + c.count(b), 70);
        assert_eq!(c.count(a), 30);
        c.fill_rect(-5.0, 8.0, 100.0, 100.0, BLACK);
        assert_eq!(c.count(BLACK), 20);
    }

    #[test]
    fn lines_circles_and_dashes() {
        let mut c = Canvas::new(50, 50, WHITE);
        c.line(0.0, 0.0, 49.0, 49.0, 1, BLACK);
        // A diagonal with no holes: exactly one pixel per row and column.
        assert_eq!(c.count(BLACK), 50);
        assert!((0..50).all(|i| c.get(i, i) == Some(BLACK)));

        let mut d = Canvas::new(60, 5, WHITE);
        d.polyline(
            &[(0.0, 2.0), (30.0, 2.0), (59.0, 2.0)],
            1,
            Some((5.0, 5.0)),
            BLACK,
        );
        let lit = d.count(BLACK);
        assert!((25..=36).contains(&lit), "{lit}");
        // Dashes continue across the vertex: pixels 30..35 are on, 35..40 off.
        assert_eq!(d.get(32, 2), Some(BLACK));
        assert_eq!(d.get(37, 2), Some(WHITE));

        let mut e = Canvas::new(30, 30, WHITE);
        e.circle(15.0, 15.0, 6.0, BLACK);
        let area = e.count(BLACK) as f64;
        assert!((area - std::f64::consts::PI * 36.0).abs() < 12.0, "{area}");
        let mut thick = Canvas::new(20, 20, WHITE);
        thick.line(2.0, 10.0, 17.0, 10.0, 3, BLACK);
        // The square brush reaches one pixel past each end (a square cap, half the width).
        assert_eq!(thick.count(BLACK), (16 + 2) * 3);
    }

    #[test]
    fn hex_colours() {
        assert_eq!(hex("#4e79a7"), [0x4e, 0x79, 0xa7]);
        assert_eq!(hex("nope"), BLACK);
    }
}
