//! The display family emits what evcxr and Jupyter expect: valid PNGs of the right size under
//! `image/png`, well-formed HTML under `text/html`, and files that reload.
use base64::Engine;
use selfsup::prelude::*;
use selfsup::viz::Payload;

fn decode_png(payload: &Payload) -> image::RgbImage {
    assert_eq!(payload.mime, "image/png");
    let bytes = base64::engine::general_purpose::STANDARD.decode(&payload.data).expect("valid base64");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    image::load_from_memory(&bytes).expect("decodable PNG").to_rgb8()
}

/// Checks that every tag opened is closed in order (void elements excepted).
fn assert_well_formed(html: &str) {
    let void = ["br", "img", "meta", "hr", "input", "link"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unclosed '<'") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if void.contains(&name.as_str()) {
            continue;
        }
        if tag.starts_with('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "mismatched closing tag </{name}>");
        } else {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
}

#[test]
fn image_payload_is_a_png_of_the_right_size_and_pixels() {
    // A 4x2 image: left half red, right half blue.
    let mut rgb = Vec::new();
    for _y in 0..2 {
        for x in 0..4 {
            rgb.extend_from_slice(if x < 2 { &[255, 0, 0] } else { &[0, 0, 255] });
        }
    }
    let img = Image::from_rgb(4, 2, rgb).unwrap();
    let png = decode_png(&img.payload().unwrap());
    assert_eq!(png.dimensions(), (4, 2));
    assert_eq!(png.get_pixel(0, 1).0, [255, 0, 0]);
    assert_eq!(png.get_pixel(3, 0).0, [0, 0, 255]);
    let text = img.payload().unwrap().to_evcxr();
    assert!(text.starts_with("EVCXR_BEGIN_CONTENT image/png\n"));
    assert!(text.ends_with("\nEVCXR_END_CONTENT\n"));
}

#[test]
fn image_from_tensor_reads_chw_layout_for_u8_and_float() {
    // Red channel only at (y=1, x=2) of a 3x4 image.
    let t = Tensor::zeros([3, 3, 4], (Kind::Uint8, Device::Cpu));
    let _ = t.get(0).get(1).get(2).fill_(200);
    let img = Image::from_tensor(&t).unwrap();
    assert_eq!((img.width(), img.height()), (4, 3));
    assert_eq!(img.pixel(2, 1), [200, 0, 0]);
    assert_eq!(img.pixel(1, 2), [0, 0, 0]);
    let f = Tensor::ones([3, 2, 2], (Kind::Float, Device::Cpu)) * 0.5;
    assert_eq!(Image::from_tensor(&f).unwrap().pixel(1, 1), [128, 128, 128]);
    assert!(Image::from_tensor(&Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu))).is_err());
    assert!(Image::from_rgb(2, 2, vec![0; 5]).is_err());
}

#[test]
fn upscale_repeats_pixels() {
    let img = Image::from_rgb(2, 1, vec![10, 20, 30, 40, 50, 60]).unwrap().upscale(3);
    assert_eq!((img.width(), img.height()), (6, 3));
    assert_eq!(img.pixel(2, 2), [10, 20, 30]);
    assert_eq!(img.pixel(3, 0), [40, 50, 60]);
}

#[test]
fn table_renders_escaped_well_formed_html_text_markdown_and_csv() {
    let t = Table::new(
        vec!["model".into(), "accuracy".into()],
        vec![vec!["MoCo <v2>".into(), "0.84".into()], vec!["scratch, \"baseline\"".into(), "0.76".into()]],
    )
    .caption("Linear probe & friends");
    let p = t.payload();
    assert_eq!(p.mime, "text/html");
    assert!(p.data.contains("MoCo &lt;v2&gt;"));
    assert!(p.data.contains("Linear probe &amp; friends"));
    assert_well_formed(&p.data);
    let text = t.to_string();
    assert!(text.lines().any(|l| l.starts_with("MoCo <v2>") && l.ends_with("0.84")));
    assert!(t.to_markdown().contains("| MoCo <v2> | 0.84 |"));
    assert!(t.to_csv().contains("\"scratch, \"\"baseline\"\"\",0.76"));
}

#[test]
fn html_and_environment_payloads_are_well_formed() {
    let h = Html::new("<div><b>hi</b><br></div>");
    assert_eq!(h.payload().mime, "text/html");
    assert_well_formed(h.as_str());
    let env = selfsup::environment();
    assert_eq!(env.selfsup, env!("CARGO_PKG_VERSION"));
    assert!(env.torch.starts_with("2.11.0"), "built against torch {}", env.torch);
    assert_well_formed(&env.table().payload().data);
}

#[test]
fn files_save_and_reload() {
    let dir = std::env::temp_dir().join(format!("selfsup-display-{}", std::process::id()));
    let img = Image::from_rgb(3, 2, vec![7; 18]).unwrap();
    img.save(dir.join("a.png")).unwrap();
    let back = image::open(dir.join("a.png")).unwrap().to_rgb8();
    assert_eq!(back.dimensions(), (3, 2));
    assert_eq!(back.get_pixel(2, 1).0, [7, 7, 7]);
    img.save(dir.join("a.svg")).unwrap();
    let svg = std::fs::read_to_string(dir.join("a.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("data:image/png;base64,"));
    assert!(img.save(dir.join("a.gif")).is_err(), "unknown extensions are refused");
    let t = Table::new(vec!["a".into()], vec![vec!["1".into()]]);
    t.save(dir.join("t.html")).unwrap();
    assert_well_formed(&std::fs::read_to_string(dir.join("t.html")).unwrap().replace("<!DOCTYPE html>", ""));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plot drawn through the `Plot` trait renders to both PNG and SVG with its colours and text.
struct Bars;
impl viz::Plot for Bars {
    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> selfsup::Result<()> {
        use plotters::prelude::*;
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| selfsup::Error::Plot(e.to_string());
        area.draw(&Rectangle::new([(10, 10), (50, 90)], RED.filled())).map_err(e)?;
        area.draw(&Text::new("label", (60, 40), ("sans-serif", 20).into_font())).map_err(e)?;
        Ok(())
    }
}

#[test]
fn figure_renders_bitmap_and_svg() {
    let fig = Figure::render(120, 100, &Bars).unwrap();
    let png = decode_png(&fig.payload().unwrap());
    assert_eq!(png.dimensions(), (120, 100));
    assert_eq!(png.get_pixel(30, 50).0, [255, 0, 0], "inside the red bar");
    assert_eq!(png.get_pixel(5, 5).0, [255, 255, 255], "white background");
    // The embedded font draws dark pixels where the text is.
    let dark = (60..118).flat_map(|x| (35..65).map(move |y| (x, y))).filter(|&(x, y)| png.get_pixel(x, y).0[0] < 128).count();
    assert!(dark > 20, "text pixels drawn: {dark}");
    let svg = fig.svg().unwrap();
    assert!(svg.contains("<svg") && svg.contains("label"));
}
