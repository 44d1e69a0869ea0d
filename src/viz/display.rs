//! Things a person looks at: [`Image`], [`Html`], [`Table`] (and [`super::Figure`]).
//!
//! Each one renders inline in Jupyter through evcxr's display protocol: a type with an
//! `evcxr_display(&self)` method is shown by printing
//! `EVCXR_BEGIN_CONTENT <mime>\n<data>\nEVCXR_END_CONTENT` when it is the last expression of a
//! cell. [`Payload`] is that block as a value, so tests can check exactly what a notebook gets.
//! Each one also saves to a file (`save`), for reports.
use crate::error::{Error, Result};
use crate::files::write_file;
use base64::Engine;
use std::path::Path;
use tch::{Kind, Tensor};

/// What evcxr receives for display: a MIME type and the (text or base64) data.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// `image/png`, `text/html` or `text/plain`.
    pub mime: &'static str,
    /// The content; base64 for binary types.
    pub data: String,
}

impl Payload {
    /// The exact text evcxr parses from the cell's stdout.
    pub fn to_evcxr(&self) -> String {
        format!("EVCXR_BEGIN_CONTENT {}\n{}\nEVCXR_END_CONTENT\n", self.mime, self.data)
    }

    /// Prints the payload for evcxr; on error prints the message as plain text instead, since a
    /// display hook cannot return an error.
    pub(crate) fn emit(payload: Result<Payload>) {
        match payload {
            Ok(p) => print!("{}", p.to_evcxr()),
            Err(e) => println!("selfsup: could not display this value: {e}"),
        }
    }
}

/// An RGB image (8 bits per channel) that displays inline as PNG.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Image {
    /// An image from interleaved RGB bytes, row-major (`rgb.len() == 3 * width * height`).
    pub fn from_rgb(width: u32, height: u32, rgb: Vec<u8>) -> Result<Self> {
        let expected = 3 * width as usize * height as usize;
        if width == 0 || height == 0 || rgb.len() != expected {
            return Err(Error::Data(format!(
                "Image::from_rgb: {width}x{height} RGB needs {expected} bytes, got {}",
                rgb.len()
            )));
        }
        Ok(Image { width, height, rgb })
    }

    /// An image from a `[3, H, W]` (or `[1, H, W]`, `[H, W]`) tensor: `u8`, or float in `[0, 1]`
    /// (values outside are clamped). Un-normalise float images first (see
    /// [`crate::data::Normalization::denormalize`]).
    pub fn from_tensor(image: &Tensor) -> Result<Self> {
        let image = match image.dim() {
            2 => image.unsqueeze(0),
            3 => image.shallow_clone(),
            _ => return Err(Error::shape("Image::from_tensor", "[C, H, W] or [H, W]", &image.size())),
        };
        let (c, h, w) = match image.size()[..] {
            [c, h, w] => (c, h, w),
            _ => unreachable!("rank checked above"),
        };
        if c != 1 && c != 3 {
            return Err(Error::shape("Image::from_tensor", "1 or 3 channels", &image.size()));
        }
        let image = image.to_device(tch::Device::Cpu);
        let bytes = if image.kind() == Kind::Uint8 {
            image
        } else {
            (image.to_kind(Kind::Float).clamp(0.0, 1.0) * 255.0).round().to_kind(Kind::Uint8)
        };
        let hwc = bytes.expand([3, h, w], false).permute([1, 2, 0]).contiguous(); // [H, W, 3]
        let mut rgb = vec![0u8; (3 * h * w) as usize];
        let numel = rgb.len();
        hwc.f_copy_data_u8(&mut rgb, numel)?;
        Image::from_rgb(w as u32, h as u32, rgb)
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Interleaved RGB bytes, row-major.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }
    /// The RGB value at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The image enlarged `factor` times with nearest-neighbour sampling (small images stay crisp).
    pub fn upscale(&self, factor: u32) -> Image {
        let factor = factor.max(1);
        let (w, h) = (self.width * factor, self.height * factor);
        let mut rgb = Vec::with_capacity(3 * (w * h) as usize);
        for y in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(&self.pixel(x / factor, y / factor));
            }
        }
        Image { width: w, height: h, rgb }
    }

    /// The image encoded as PNG.
    pub fn png_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out).write_image_rgb(self)?;
        Ok(out)
    }

    /// Saves as `.png`, or as `.svg` (the PNG embedded), by the file's extension.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        match extension(path).as_str() {
            "png" => write_file(path, &self.png_bytes()?),
            "svg" => write_file(path, self.svg_wrapper()?.as_bytes()),
            other => Err(Error::Data(format!(
                "cannot save an image as '.{other}' ({}): use a .png or .svg file name",
                path.display()
            ))),
        }
    }

    /// An SVG document that embeds the PNG (for reports that want one format).
    pub fn svg_wrapper(&self) -> Result<String> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.png_bytes()?);
        Ok(format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><image width=\"{w}\" height=\"{h}\" href=\"data:image/png;base64,{b64}\"/></svg>",
            w = self.width,
            h = self.height
        ))
    }

    /// The evcxr payload: `image/png`, base64.
    pub fn payload(&self) -> Result<Payload> {
        Ok(Payload { mime: "image/png", data: base64::engine::general_purpose::STANDARD.encode(self.png_bytes()?) })
    }

    /// evcxr display hook: the image appears under the cell.
    pub fn evcxr_display(&self) {
        Payload::emit(self.payload())
    }
}

trait WriteRgb {
    fn write_image_rgb(self, image: &Image) -> Result<()>;
}

impl<W: std::io::Write> WriteRgb for image::codecs::png::PngEncoder<W> {
    fn write_image_rgb(self, img: &Image) -> Result<()> {
        use image::ImageEncoder;
        self.write_image(&img.rgb, img.width, img.height, image::ExtendedColorType::Rgb8)?;
        Ok(())
    }
}

/// A fragment of HTML that displays inline (`text/html`).
#[derive(Debug, Clone, PartialEq)]
pub struct Html(pub String);

impl Html {
    /// Wraps an HTML fragment.
    pub fn new(html: impl Into<String>) -> Self {
        Html(html.into())
    }
    /// The fragment.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Saves as a standalone `.html` page (UTF-8, the fragment in its body).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>selfsup</title></head><body>\n{}\n</body></html>\n",
            self.0
        );
        write_file(path.as_ref(), page.as_bytes())
    }
    /// The evcxr payload: `text/html`.
    pub fn payload(&self) -> Payload {
        Payload { mime: "text/html", data: self.0.clone() }
    }
    /// evcxr display hook.
    pub fn evcxr_display(&self) {
        Payload::emit(Ok(self.payload()))
    }
}

/// A table of strings with a header row: inline as HTML, `Display` as aligned text,
/// savable as `.html`, `.md`, `.csv` or `.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Rows; each has as many cells as the header.
    pub rows: Vec<Vec<String>>,
    /// Optional caption shown above the table.
    pub caption: Option<String>,
}

impl Table {
    /// A table; short rows are padded with empty cells.
    pub fn new(header: Vec<String>, rows: Vec<Vec<String>>) -> Self {
        let n = header.len();
        let rows = rows
            .into_iter()
            .map(|mut r| {
                r.resize(n.max(r.len()), String::new());
                r
            })
            .collect();
        Table { header, rows, caption: None }
    }

    /// The same table with a caption.
    pub fn caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// The table as an HTML fragment (cells escaped).
    pub fn to_html(&self) -> String {
        let mut s = String::from("<table class=\"selfsup-table\" style=\"border-collapse:collapse\">\n");
        if let Some(c) = &self.caption {
            s += &format!("<caption style=\"font-weight:bold;text-align:left\">{}</caption>\n", escape_html(c));
        }
        s += "<thead><tr>";
        for h in &self.header {
            s += &format!("<th style=\"padding:2px 10px;border-bottom:1px solid #888;text-align:left\">{}</th>", escape_html(h));
        }
        s += "</tr></thead>\n<tbody>\n";
        for row in &self.rows {
            s += "<tr>";
            for cell in row {
                s += &format!("<td style=\"padding:2px 10px\">{}</td>", escape_html(cell));
            }
            s += "</tr>\n";
        }
        s += "</tbody>\n</table>";
        s
    }

    /// The table in GitHub markdown.
    pub fn to_markdown(&self) -> String {
        let esc = |c: &String| c.replace('|', "\\|");
        let mut s = format!("| {} |\n", self.header.iter().map(esc).collect::<Vec<_>>().join(" | "));
        s += &format!("|{}\n", " --- |".repeat(self.header.len()));
        for row in &self.rows {
            s += &format!("| {} |\n", row.iter().map(esc).collect::<Vec<_>>().join(" | "));
        }
        s
    }

    /// The table as CSV (RFC 4180 quoting).
    pub fn to_csv(&self) -> String {
        let quote = |c: &String| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        };
        std::iter::once(&self.header)
            .chain(self.rows.iter())
            .map(|r| r.iter().map(quote).collect::<Vec<_>>().join(",") + "\n")
            .collect()
    }

    /// Saves by extension: `.html`, `.md`, `.csv` or `.txt`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        match extension(path).as_str() {
            "html" | "htm" => Html::new(self.to_html()).save(path),
            "md" => write_file(path, self.to_markdown().as_bytes()),
            "csv" => write_file(path, self.to_csv().as_bytes()),
            "txt" => write_file(path, self.to_string().as_bytes()),
            other => Err(Error::Data(format!(
                "cannot save a table as '.{other}' ({}): use .html, .md, .csv or .txt",
                path.display()
            ))),
        }
    }

    /// The evcxr payload: `text/html`.
    pub fn payload(&self) -> Payload {
        Payload { mime: "text/html", data: self.to_html() }
    }

    /// evcxr display hook.
    pub fn evcxr_display(&self) {
        Payload::emit(Ok(self.payload()))
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        if let Some(c) = &self.caption {
            writeln!(f, "{c}")?;
        }
        writeln!(f, "{}", line(&self.header))?;
        writeln!(f, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "))?;
        for row in &self.rows {
            writeln!(f, "{}", line(row))?;
        }
        Ok(())
    }
}

/// Escapes `& < > " '` for HTML text and attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}
