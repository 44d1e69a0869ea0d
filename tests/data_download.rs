//! The downloader against a loopback HTTP server started here, serving a small `.tar.gz` built
//! here: download + md5 + extraction, resume of an interrupted download with `Range`, an md5
//! mismatch, a server that ignores `Range`, a missing file, the offline message, and a mirror
//! that falls back to the next address.
use selfsup::data::download::{self, Archive, DownloadConfig};
use selfsup::Result;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn tmp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("data_download").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Incompressible bytes (so the archive is as large as its content).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// A `.tar.gz` holding `toy/a.txt` and `toy/sub/b.bin` (200 kB of noise).
fn toy_archive() -> (Vec<u8>, Vec<u8>) {
    let payload = noise(200_000, 1);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, data).unwrap();
    };
    add("toy/a.txt", b"hello");
    add("toy/sub/b.bin", &payload);
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    (bytes, payload)
}

#[derive(Clone)]
enum Route {
    /// Serve the bytes, honouring `Range: bytes=N-`.
    Bytes(Vec<u8>),
    /// The first request gets the headers of the whole file but only `cut` bytes, then the
    /// connection closes; later requests are served like [`Route::Bytes`].
    CutOnce(Vec<u8>, usize),
    /// Always the whole file with 200, whatever `Range` says.
    NoRange(Vec<u8>),
    /// The headers of the whole file and `cut` bytes, then silence (the connection stays open).
    Stall(Vec<u8>, usize),
}

/// A tiny HTTP/1.1 server on 127.0.0.1; `log` records "METHOD PATH range=…" per request.
struct Server {
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(routes: HashMap<&'static str, Route>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (log2, routes) = (log.clone(), Arc::new(Mutex::new(routes)));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (routes, log) = (routes.clone(), log2.clone());
                std::thread::spawn(move || handle(stream, &routes, &log));
            }
        });
        Server { base, log }
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn handle(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<&'static str, Route>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range_start: Option<usize> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_start = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    log.lock().unwrap().push(format!("GET {path} range={range_start:?}"));
    let route = routes.lock().unwrap().get(path.as_str()).cloned();
    let (bytes, cut, honour_range) = match route {
        None => {
            stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Some(Route::Bytes(b)) => (b, None, true),
        Some(Route::NoRange(b)) => (b, None, false),
        Some(Route::Stall(b, cut)) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len());
            stream.write_all(head.as_bytes())?;
            stream.write_all(&b[..cut])?;
            stream.flush()?;
            std::thread::sleep(std::time::Duration::from_secs(20));
            return Ok(());
        }
        Some(Route::CutOnce(b, cut)) => {
            routes.lock().unwrap().insert(Box::leak(path.clone().into_boxed_str()), Route::Bytes(b.clone()));
            (b, Some(cut), true)
        }
    };
    match range_start.filter(|_| honour_range) {
        Some(start) if start >= bytes.len() => {
            let head = format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", bytes.len());
            stream.write_all(head.as_bytes())?;
        }
        Some(start) => {
            let body = &bytes[start..];
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len() - 1,
                bytes.len(),
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(body)?;
        }
        None => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bytes.len());
            stream.write_all(head.as_bytes())?;
            stream.write_all(&bytes[..cut.unwrap_or(bytes.len())])?;
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

fn archive(urls: Vec<String>, md5: &str) -> Archive {
    Archive { name: "toy".into(), urls, file_name: "toy.tar.gz".into(), md5: Some(md5.into()), folder: "toy".into() }
}

fn quiet() -> DownloadConfig {
    DownloadConfig { progress: false, timeout_s: 5, ..Default::default() }
}

fn md5_of(bytes: &[u8], dir: &Path) -> String {
    let p = dir.join("md5-probe");
    std::fs::write(&p, bytes).unwrap();
    let sum = download::md5_file(&p).unwrap();
    std::fs::remove_file(p).unwrap();
    sum
}

#[test]
fn md5_of_known_strings() -> Result<()> {
    let dir = tmp_dir("md5");
    assert_eq!(md5_of(b"", &dir), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_of(b"abc", &dir), "900150983cd24fb0d6963f7d28e17f72");
    Ok(())
}

#[test]
fn downloads_checks_and_extracts_once() -> Result<()> {
    let dir = tmp_dir("fresh");
    let (tgz, payload) = toy_archive();
    let server = Server::start(HashMap::from([("/toy.tar.gz", Route::Bytes(tgz.clone()))]));
    let md5 = md5_of(&tgz, &dir);
    let cfg = DownloadConfig { progress: true, ..quiet() }; // the progress line, once
    let folder = download::download(&archive(vec![server.url("/toy.tar.gz")], &md5), &dir, &cfg)?;
    assert_eq!(folder, dir.join("toy"));
    assert_eq!(std::fs::read(folder.join("a.txt"))?, b"hello");
    assert_eq!(std::fs::read(folder.join("sub/b.bin"))?, payload);
    assert!(dir.join("toy.tar.gz").is_file(), "archive kept by default");
    assert!(!dir.join("toy.tar.gz.part").exists() && !dir.join(".toy.extracting").exists());
    assert_eq!(server.requests(), vec!["GET /toy.tar.gz range=None"]);
    // Already there: no request at all.
    download::download(&archive(vec![server.url("/toy.tar.gz")], &md5), &dir, &quiet())?;
    assert_eq!(server.requests().len(), 1);
    // Folder removed, archive kept: extracted again without downloading.
    std::fs::remove_dir_all(&folder)?;
    let cfg = DownloadConfig { keep_archive: false, ..quiet() };
    download::download(&archive(vec![server.url("/toy.tar.gz")], &md5), &dir, &cfg)?;
    assert_eq!(server.requests().len(), 1);
    assert!(folder.join("sub/b.bin").is_file() && !dir.join("toy.tar.gz").exists());
    Ok(())
}

#[test]
fn resumes_an_interrupted_download_with_range() -> Result<()> {
    let dir = tmp_dir("resume");
    let (tgz, payload) = toy_archive();
    let cut = tgz.len() / 3;
    let server = Server::start(HashMap::from([("/toy.tar.gz", Route::CutOnce(tgz.clone(), cut))]));
    let a = archive(vec![server.url("/toy.tar.gz")], &md5_of(&tgz, &dir));
    let msg = download::download(&a, &dir, &quiet()).unwrap_err().to_string();
    assert!(msg.contains("interrupted") && msg.contains("run again to resume"), "{msg}");
    assert_eq!(std::fs::metadata(dir.join("toy.tar.gz.part"))?.len(), cut as u64);
    assert!(!dir.join("toy").exists());
    // The second run asks for the rest only.
    download::download(&a, &dir, &DownloadConfig { progress: true, ..quiet() })?;
    assert_eq!(
        server.requests(),
        vec!["GET /toy.tar.gz range=None".to_string(), format!("GET /toy.tar.gz range=Some({cut})")]
    );
    assert_eq!(std::fs::read(dir.join("toy.tar.gz"))?, tgz);
    assert_eq!(std::fs::read(dir.join("toy/sub/b.bin"))?, payload);
    Ok(())
}

#[test]
fn complete_part_file_and_servers_without_range() -> Result<()> {
    let (tgz, _) = toy_archive();
    // A complete `.part` left by a crash between download and rename: the server answers 416.
    let dir = tmp_dir("complete_part");
    let server = Server::start(HashMap::from([
        ("/toy.tar.gz", Route::Bytes(tgz.clone())),
        ("/plain.tar.gz", Route::NoRange(tgz.clone())),
    ]));
    std::fs::write(dir.join("toy.tar.gz.part"), &tgz)?;
    download::download(&archive(vec![server.url("/toy.tar.gz")], &md5_of(&tgz, &dir)), &dir, &quiet())?;
    assert!(dir.join("toy/a.txt").is_file());
    assert_eq!(server.requests(), vec![format!("GET /toy.tar.gz range=Some({})", tgz.len())]);
    // A server that ignores Range: the partial file is replaced, not appended to.
    let dir = tmp_dir("no_range");
    std::fs::write(dir.join("toy.tar.gz.part"), &tgz[..1000])?;
    download::download(&archive(vec![server.url("/plain.tar.gz")], &md5_of(&tgz, &dir)), &dir, &quiet())?;
    assert_eq!(std::fs::read(dir.join("toy.tar.gz"))?, tgz);
    Ok(())
}

#[test]
fn a_stalled_download_ends_with_resume_advice() -> Result<()> {
    let dir = tmp_dir("stall");
    let (tgz, _) = toy_archive();
    let server = Server::start(HashMap::from([("/toy.tar.gz", Route::Stall(tgz.clone(), 5000))]));
    let cfg = DownloadConfig { timeout_s: 1, ..quiet() };
    let started = std::time::Instant::now();
    let msg = download::download(&archive(vec![server.url("/toy.tar.gz")], &md5_of(&tgz, &dir)), &dir, &cfg)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no data for 1 s") && msg.contains("run again to resume"), "{msg}");
    assert!(started.elapsed().as_secs() < 10, "gave up after the stall timeout, not the server's silence");
    assert_eq!(std::fs::metadata(dir.join("toy.tar.gz.part"))?.len(), 5000);
    Ok(())
}

#[test]
fn md5_mismatch_deletes_the_damaged_file() -> Result<()> {
    let dir = tmp_dir("md5_mismatch");
    let (tgz, _) = toy_archive();
    let mut damaged = tgz.clone();
    damaged[500] ^= 0xff;
    let server = Server::start(HashMap::from([("/toy.tar.gz", Route::Bytes(damaged))]));
    let expected = md5_of(&tgz, &dir);
    let msg = download::download(&archive(vec![server.url("/toy.tar.gz")], &expected), &dir, &quiet())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("md5 mismatch") && msg.contains(&expected) && msg.contains("deleted"), "{msg}");
    assert!(!dir.join("toy.tar.gz").exists() && !dir.join("toy.tar.gz.part").exists() && !dir.join("toy").exists());
    Ok(())
}

#[test]
fn offline_message_says_what_to_download_by_hand() -> Result<()> {
    let dir = tmp_dir("offline");
    // A port nobody listens on: bind, read the port, close.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}/toy.tar.gz");
    let msg = download::download(&archive(vec![url.clone()], "0"), &dir, &quiet()).unwrap_err().to_string();
    assert!(msg.contains("could not reach") && msg.contains("you seem offline"), "{msg}");
    assert!(
        msg.contains("Download toy.tar.gz by hand") && msg.contains(&url) && msg.contains(&dir.display().to_string()),
        "{msg}"
    );

    // A dead mirror first, then the working address.
    let (tgz, _) = toy_archive();
    let server = Server::start(HashMap::from([("/toy.tar.gz", Route::Bytes(tgz.clone()))]));
    let a = archive(vec![server.url("/toy.tar.gz")], &md5_of(&tgz, &dir)).mirror(url);
    assert_eq!(a.urls.len(), 2);
    download::download(&a, &dir, &quiet())?;
    assert!(dir.join("toy/a.txt").is_file());
    Ok(())
}

#[test]
fn http_errors_and_wrong_archives() -> Result<()> {
    let dir = tmp_dir("http_errors");
    let (tgz, _) = toy_archive();
    let server = Server::start(HashMap::from([
        ("/toy.tar.gz", Route::Bytes(tgz.clone())),
        ("/junk.tar.gz", Route::Bytes(b"not gzip".to_vec())),
    ]));
    let msg =
        download::download(&archive(vec![server.url("/missing.tar.gz")], "0"), &dir, &quiet()).unwrap_err().to_string();
    assert!(msg.contains("HTTP 404") && msg.contains("missing.tar.gz"), "{msg}");
    // The archive does not hold the expected folder.
    let wrong =
        Archive { folder: "stl10_binary".into(), ..archive(vec![server.url("/toy.tar.gz")], &md5_of(&tgz, &dir)) };
    let msg = download::download(&wrong, &dir, &quiet()).unwrap_err().to_string();
    assert!(msg.contains("does not hold the folder stl10_binary") && msg.contains("toy"), "{msg}");
    // Not a tar.gz at all (no md5 to catch it first).
    let dir = tmp_dir("junk");
    let junk = Archive { md5: None, ..archive(vec![server.url("/junk.tar.gz")], "") };
    let msg = download::download(&junk, &dir, &quiet()).unwrap_err().to_string();
    assert!(msg.contains("could not extract") && msg.contains("toy.tar.gz"), "{msg}");
    Ok(())
}

#[test]
fn official_archives_match_torchvision() {
    let stl = Archive::stl10();
    assert_eq!(stl.urls, vec!["http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"]);
    assert_eq!(stl.md5.as_deref(), Some("91f7769df0f17e558f3565bffb0c7dfb"));
    assert_eq!((stl.file_name.as_str(), stl.folder.as_str()), ("stl10_binary.tar.gz", "stl10_binary"));
    assert_eq!(Archive::cifar10().md5.as_deref(), Some("c58f30108f718f92721af3b95e74349a"));
    assert_eq!(Archive::cifar10().folder, "cifar-10-batches-py");
    assert_eq!(Archive::cifar100().md5.as_deref(), Some("eb9058c3a382ffc7106e4002c42a8d85"));
    assert_eq!(Archive::cifar10_binary().md5.as_deref(), Some("c32a1d4ab5d03f1284b67883e8d87530"));
    assert_eq!(Archive::cifar100_binary().folder, "cifar-100-binary");
}
