//! Grouped bar charts written as PNG with no image, font or compression dependency: the
//! evaluation report needs a few plain charts, and a plotting crate (system fonts, C libraries,
//! long builds) would cost more than these ~400 lines. Text uses a built-in 5x7 bitmap font
//! (upper case; lower case is drawn as upper case). The PNG is RGB, compressed with a small
//! LZ77 (matches one pixel back or one row up, which is what flat chart areas repeat) and
//! deflate's fixed Huffman codes.

use std::path::Path;

use anyhow::{Context as _, Result};

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [200, 200, 200];
pub const DARK_GREY: Rgb = [110, 110, 110];

/// Series colours (Tableau 10), distinguishable in print and for most colour-blind readers.
pub const SERIES_COLOURS: [Rgb; 10] = [
    [78, 121, 167],
    [242, 142, 43],
    [225, 87, 89],
    [118, 183, 178],
    [89, 161, 79],
    [237, 201, 72],
    [176, 122, 161],
    [255, 157, 167],
    [156, 117, 95],
    [186, 176, 172],
];

/// Glyph cell: 5 x 7 pixels plus one column and one row of spacing.
pub const GLYPH_W: usize = 5;
pub const GLYPH_H: usize = 7;

/// An RGB image being drawn on.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: Rgb) -> Canvas {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&background);
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Fills the rectangle `[x0, x1) x [y0, y1)`, clipped to the canvas.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, colour: Rgb) {
        let cx = |v: i64| v.clamp(0, self.width as i64) as usize;
        let cy = |v: i64| v.clamp(0, self.height as i64) as usize;
        let (x0, x1, y0, y1) = (
            cx(x0.min(x1)),
            cx(x0.max(x1)),
            cy(y0.min(y1)),
            cy(y0.max(y1)),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let i = (y * self.width + x) * 3;
                self.pixels[i..i + 3].copy_from_slice(&colour);
            }
        }
    }

    /// Width in pixels of `text` at `scale`.
    pub fn text_width(text: &str, scale: usize) -> usize {
        text.chars().count() * (GLYPH_W + 1) * scale
    }

    /// Draws `text` with its top-left corner at (x, y).
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, colour: Rgb) {
        let s = scale as i64;
        for (k, c) in text.chars().enumerate() {
            let rows = glyph(c);
            let gx = x + k as i64 * (GLYPH_W as i64 + 1) * s;
            for (r, row) in rows.iter().enumerate() {
                for (col, b) in row.bytes().enumerate() {
                    if b == b'#' {
                        let px = gx + col as i64 * s;
                        let py = y + r as i64 * s;
                        self.fill_rect(px, py, px + s, py + s, colour);
                    }
                }
            }
        }
    }

    /// Draws `text` horizontally centred on `cx`.
    pub fn text_centred(&mut self, cx: i64, y: i64, text: &str, scale: usize, colour: Rgb) {
        let w = Self::text_width(text, scale) as i64;
        self.text(cx - w / 2, y, text, scale, colour);
    }

    /// The image as a PNG file.
    pub fn to_png(&self) -> Vec<u8> {
        encode_png(self.width, self.height, &self.pixels)
    }

    pub fn save_png(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_png())
            .with_context(|| format!("{}: cannot write PNG", path.display()))
    }
}

/// A grouped bar chart: one group of bars per entry of `groups`, one bar (and legend colour)
/// per entry of `series`; `values[group][series]`, `None` drawn as a small cross (undefined).
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub groups: Vec<String>,
    pub series: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
    /// Dashed horizontal lines with a label at the right end (e.g. floor 0 and ceiling 1).
    pub reference_lines: Vec<(f64, String)>,
    /// The y range always includes this one (data outside widens it).
    pub y_range: (f64, f64),
}

/// Chart layout, pixels.
const WIDTH: usize = 1200;
const PLOT_LEFT: i64 = 80;
const PLOT_RIGHT: i64 = 90;
const PLOT_TOP: i64 = 60;
const PLOT_HEIGHT: i64 = 380;

/// A "nice" tick step (1, 2, 2.5 or 5 times a power of ten) giving about `target` ticks.
fn tick_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(1e-12);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// Splits a label at `_`, `-` and spaces into lines of at most `max_chars` characters.
fn wrap(label: &str, max_chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split(['_', ' ', '-']).filter(|w| !w.is_empty()) {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= max_chars => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

impl BarChart {
    pub fn render(&self) -> Canvas {
        let n_groups = self.groups.len().max(1);
        let n_series = self.series.len().max(1);
        // Legend rows below the group labels.
        let legend_item_w = self
            .series
            .iter()
            .map(|s| Canvas::text_width(s, 2) + 40)
            .max()
            .unwrap_or(100) as i64;
        let per_row = ((WIDTH as i64 - PLOT_LEFT) / legend_item_w).max(1) as usize;
        let legend_rows = self.series.len().div_ceil(per_row);
        let label_lines = 3;
        let height =
            (PLOT_TOP + PLOT_HEIGHT + 16 + label_lines * 12 + 20 + legend_rows as i64 * 26 + 10)
                as usize;
        let mut c = Canvas::new(WIDTH, height, WHITE);
        c.text(PLOT_LEFT, 16, &self.title, 2, BLACK);
        c.text(8, PLOT_TOP - 22, &self.y_label, 1, DARK_GREY);

        // Value range.
        let (mut lo, mut hi) = self.y_range;
        for v in self.values.iter().flatten().flatten() {
            if v.is_finite() {
                lo = lo.min(*v);
                hi = hi.max(*v);
            }
        }
        for (v, _) in &self.reference_lines {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
        if hi - lo < 1e-9 {
            hi = lo + 1.0;
        }
        let step = tick_step(hi - lo, 6.0);
        lo = (lo / step).floor() * step;
        hi = (hi / step).ceil() * step;
        let plot_w = WIDTH as i64 - PLOT_LEFT - PLOT_RIGHT;
        let y_of = |v: f64| PLOT_TOP + ((hi - v) / (hi - lo) * PLOT_HEIGHT as f64).round() as i64;

        // Grid and y ticks.
        let mut t = lo;
        while t <= hi + step * 1e-6 {
            let y = y_of(t);
            c.fill_rect(PLOT_LEFT, y, PLOT_LEFT + plot_w, y + 1, GREY);
            let label = format_tick(t, step);
            let w = Canvas::text_width(&label, 1) as i64;
            c.text(PLOT_LEFT - 8 - w, y - 3, &label, 1, BLACK);
            t += step;
        }
        // Axes.
        c.fill_rect(
            PLOT_LEFT - 1,
            PLOT_TOP,
            PLOT_LEFT,
            PLOT_TOP + PLOT_HEIGHT + 1,
            BLACK,
        );
        let y0 = y_of(0.0f64.clamp(lo, hi));
        c.fill_rect(PLOT_LEFT, y0, PLOT_LEFT + plot_w, y0 + 1, BLACK);

        // Bars.
        let group_w = plot_w as f64 / n_groups as f64;
        let bar_w = (group_w * 0.8 / n_series as f64).max(1.0);
        for (g, row) in self.values.iter().enumerate() {
            let gx = PLOT_LEFT as f64 + g as f64 * group_w + group_w * 0.1;
            for (s, v) in row.iter().enumerate() {
                let x0 = (gx + s as f64 * bar_w).round() as i64;
                let x1 = (gx + (s + 1) as f64 * bar_w).round() as i64 - 1;
                let colour = SERIES_COLOURS[s % SERIES_COLOURS.len()];
                match v {
                    Some(v) if v.is_finite() => {
                        c.fill_rect(x0, y_of(*v), x1.max(x0 + 1), y0, colour)
                    }
                    _ => {
                        // Undefined for this population: a small cross on the zero line.
                        let cx = (x0 + x1) / 2;
                        for d in -3..=3i64 {
                            c.fill_rect(cx + d, y0 - 4 + d, cx + d + 1, y0 - 3 + d, colour);
                            c.fill_rect(cx + d, y0 - 4 - d, cx + d + 1, y0 - 3 - d, colour);
                        }
                    }
                }
            }
            // Group label, wrapped.
            let cx = (PLOT_LEFT as f64 + (g as f64 + 0.5) * group_w) as i64;
            let max_chars = ((group_w - 4.0) / (GLYPH_W as f64 + 1.0)).max(3.0) as usize;
            let label = self.groups.get(g).map_or("", String::as_str);
            for (l, line) in wrap(label, max_chars)
                .iter()
                .take(label_lines as usize)
                .enumerate()
            {
                c.text_centred(
                    cx,
                    PLOT_TOP + PLOT_HEIGHT + 12 + l as i64 * 12,
                    line,
                    1,
                    BLACK,
                );
            }
        }

        // Reference lines: dashed, labelled on the right.
        for (v, label) in &self.reference_lines {
            let y = y_of(*v);
            let mut x = PLOT_LEFT;
            while x < PLOT_LEFT + plot_w {
                c.fill_rect(x, y, (x + 8).min(PLOT_LEFT + plot_w), y + 2, DARK_GREY);
                x += 14;
            }
            c.text(PLOT_LEFT + plot_w + 6, y - 3, label, 1, DARK_GREY);
        }

        // Legend.
        let legend_top = PLOT_TOP + PLOT_HEIGHT + 16 + label_lines * 12 + 20;
        for (s, name) in self.series.iter().enumerate() {
            let (r, k) = (s / per_row, s % per_row);
            let x = PLOT_LEFT + k as i64 * legend_item_w;
            let y = legend_top + r as i64 * 26;
            c.fill_rect(
                x,
                y,
                x + 24,
                y + 14,
                SERIES_COLOURS[s % SERIES_COLOURS.len()],
            );
            c.text(x + 32, y, name, 2, BLACK);
        }
        c
    }
}

/// A tick label with as many decimals as the step needs.
fn format_tick(v: f64, step: f64) -> String {
    let decimals = (0..=6)
        .find(|&d| {
            let x = step * 10f64.powi(d);
            (x - x.round()).abs() < 1e-6 * x.abs().max(1.0)
        })
        .unwrap_or(6) as usize;
    let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
    format!("{v:.decimals$}")
}

// ---------------------------------------------------------------------------------------------
// PNG encoding

/// CRC-32 (ISO 3309, the PNG chunk checksum).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Deflate bit writer: bits are packed from the least significant end of each byte.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= (value as u64) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Huffman codes go most significant bit first.
    fn put_code(&mut self, code: u32, bits: u32) {
        let mut rev = 0;
        for i in 0..bits {
            rev |= ((code >> i) & 1) << (bits - 1 - i);
        }
        self.put(rev, bits);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Fixed Huffman code of literal/length symbol `sym` (RFC 1951 §3.2.6).
fn put_litlen(bits: &mut Bits, sym: u32) {
    match sym {
        0..=143 => bits.put_code(0x30 + sym, 8),
        144..=255 => bits.put_code(0x190 + sym - 144, 9),
        256..=279 => bits.put_code(sym - 256, 7),
        _ => bits.put_code(0xC0 + sym - 280, 8),
    }
}

const LEN_BASE: [u32; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u32; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u32; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// One fixed-Huffman deflate block of `data`, trying back-references at the distances in
/// `distances` only (each at most 32768).
pub fn deflate_fixed(data: &[u8], distances: &[usize]) -> Vec<u8> {
    let mut bits = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // final block
    bits.put(1, 2); // fixed Huffman codes
    let mut i = 0;
    while i < data.len() {
        let mut best = (0usize, 0usize);
        for &d in distances {
            if d == 0 || d > i || d > 32768 {
                continue;
            }
            let mut len = 0;
            while len < 258 && i + len < data.len() && data[i + len] == data[i + len - d] {
                len += 1;
            }
            if len > best.0 {
                best = (len, d);
            }
        }
        let (len, dist) = best;
        if len >= 3 {
            let li = LEN_BASE
                .iter()
                .rposition(|&b| b as usize <= len)
                .unwrap_or(0);
            put_litlen(&mut bits, 257 + li as u32);
            bits.put(len as u32 - LEN_BASE[li], LEN_EXTRA[li]);
            let di = DIST_BASE
                .iter()
                .rposition(|&b| b as usize <= dist)
                .unwrap_or(0);
            bits.put_code(di as u32, 5);
            bits.put(dist as u32 - DIST_BASE[di], DIST_EXTRA[di]);
            i += len;
        } else {
            put_litlen(&mut bits, data[i] as u32);
            i += 1;
        }
    }
    put_litlen(&mut bits, 256);
    bits.finish()
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// An 8-bit RGB PNG of `rgb` (`width * height * 3` bytes, rows top to bottom).
pub fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    assert_eq!(rgb.len(), width * height * 3, "pixel buffer size");
    let stride = width * 3 + 1;
    let mut raw = Vec::with_capacity(stride * height);
    for row in rgb.chunks(width * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    z.extend(deflate_fixed(&raw, &[3, stride]));
    z.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter set, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    png
}

// ---------------------------------------------------------------------------------------------
// Font

/// The 5x7 glyph of `c` (`#` = ink); lower case maps to upper case, unknown characters to `?`.
fn glyph(c: char) -> &'static [&'static str; 7] {
    let c = c.to_ascii_uppercase();
    FONT.iter()
        .find(|(g, _)| *g == c)
        .or_else(|| FONT.iter().find(|(g, _)| *g == '?'))
        .map(|(_, rows)| rows)
        .expect("font has '?'")
}

#[rustfmt::skip]
const FONT: [(char, [&str; 7]); 55] = [
    ('A', [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"]),
    ('B', ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."]),
    ('C', [".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."]),
    ('D', ["####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."]),
    ('E', ["#####", "#....", "#....", "####.", "#....", "#....", "#####"]),
    ('F', ["#####", "#....", "#....", "####.", "#....", "#....", "#...."]),
    ('G', [".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"]),
    ('H', ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"]),
    ('I', [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('J', ["..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."]),
    ('K', ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"]),
    ('L', ["#....", "#....", "#....", "#....", "#....", "#....", "#####"]),
    ('M', ["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"]),
    ('N', ["#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"]),
    ('O', [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."]),
    ('P', ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."]),
    ('Q', [".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"]),
    ('R', ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"]),
    ('S', [".####", "#....", "#....", ".###.", "....#", "....#", "####."]),
    ('T', ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."]),
    ('U', ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."]),
    ('V', ["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."]),
    ('W', ["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."]),
    ('X', ["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"]),
    ('Y', ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."]),
    ('Z', ["#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"]),
    ('0', [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."]),
    ('1', ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('2', [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"]),
    ('3', ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."]),
    ('4', ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."]),
    ('5', ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."]),
    ('6', ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."]),
    ('7', ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."]),
    ('8', [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."]),
    ('9', [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."]),
    (' ', [".....", ".....", ".....", ".....", ".....", ".....", "....."]),
    ('.', [".....", ".....", ".....", ".....", ".....", ".##..", ".##.."]),
    (',', [".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."]),
    ('-', [".....", ".....", ".....", ".###.", ".....", ".....", "....."]),
    ('_', [".....", ".....", ".....", ".....", ".....", ".....", "#####"]),
    (':', [".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."]),
    ('/', [".....", "....#", "...#.", "..#..", ".#...", "#....", "....."]),
    ('(', ["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."]),
    (')', [".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."]),
    ('%', ["##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"]),
    ('+', [".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."]),
    ('=', [".....", ".....", "#####", ".....", "#####", ".....", "....."]),
    ('<', ["...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."]),
    ('>', [".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."]),
    ('\'', ["..#..", "..#..", ".#...", ".....", ".....", ".....", "....."]),
    ('?', [".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."]),
    ('[', [".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."]),
    (']', [".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."]),
    ('#', [".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn every_glyph_is_five_by_seven() {
        for (c, rows) in FONT {
            assert!(rows.iter().all(|r| r.len() == GLYPH_W), "glyph {c:?}");
        }
    }

    #[test]
    fn tick_steps_are_nice() {
        assert_eq!(tick_step(1.0, 5.0), 0.2);
        assert_eq!(tick_step(1.2, 6.0), 0.2);
        assert_eq!(tick_step(30.0, 6.0), 5.0);
        assert_eq!(format_tick(0.25, 0.25), "0.25");
        assert_eq!(format_tick(0.4, 0.2), "0.4");
        assert_eq!(format_tick(10.0, 5.0), "10");
    }

    #[test]
    fn labels_wrap_at_underscores() {
        assert_eq!(
            wrap("category_guidance_only", 10),
            vec!["category", "guidance", "only"]
        );
        assert_eq!(wrap("no_guidance", 20), vec!["no guidance"]);
    }
}
