//! Downloading STL-10 and CIFAR (torchvision's `download=True`), with a progress line,
//! resume of a partial file, an md5 check against the official sums, and extraction (B2).
//!
//! Each function returns the extracted folder and does nothing when it is already there, so
//! one notebook line both fetches the data the first time and finds it afterwards:
//!
//! ```no_run
//! use selfsup::data::{download, stl10, Split};
//! let unlabeled = stl10::load(download::stl10("assets/data")?, Split::Unlabeled)?;
//! # Ok::<(), selfsup::Error>(())
//! ```
//!
//! Why resume: the STL-10 archive is 2.64 GB and university servers are slow; an interrupted
//! cell keeps `<archive>.part` and the next run asks for the rest (HTTP `Range`). Why md5: a
//! truncated or damaged archive otherwise shows up much later as a confusing read error. The
//! sums are the official ones torchvision checks. Why extract to a temporary folder first: the
//! dataset folder appears only once it is complete, so its presence means "done".
//!
//! Offline (a laptop on a train, a GPU node without internet), the error says which file to
//! fetch by hand and where to extract it.
use super::fsutil::thousands;
use crate::error::{Error, Result};
use crate::progress::StatusLine;
use md5::{Digest, Md5};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A dataset archive: where to get it, its checksum, and the folder it extracts to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Archive {
    /// Human name for messages ("STL-10").
    pub name: String,
    /// Where to download it from, tried in order.
    pub urls: Vec<String>,
    /// File name of the archive on disk.
    pub file_name: String,
    /// Official md5 of the archive (lower-case hex), checked after download; `None` skips it.
    pub md5: Option<String>,
    /// The top-level folder inside the archive (`stl10_binary`).
    pub folder: String,
}

impl Archive {
    fn new(name: &str, url: &str, md5: &str, folder: &str) -> Archive {
        let file_name = url.rsplit('/').next().unwrap_or(url).to_string();
        Archive { name: name.into(), urls: vec![url.into()], file_name, md5: Some(md5.into()), folder: folder.into() }
    }

    /// STL-10 binary, 2,640,397,119 bytes (torchvision `STL10.url`, `tgz_md5`).
    pub fn stl10() -> Archive {
        Archive::new(
            "STL-10",
            "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
            "91f7769df0f17e558f3565bffb0c7dfb",
            "stl10_binary",
        )
    }
    /// CIFAR-10, python version (what torchvision's `CIFAR10` downloads).
    pub fn cifar10() -> Archive {
        Archive::new(
            "CIFAR-10",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            "cifar-10-batches-py",
        )
    }
    /// CIFAR-10, binary version.
    pub fn cifar10_binary() -> Archive {
        Archive::new(
            "CIFAR-10 (binary)",
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
            "cifar-10-batches-bin",
        )
    }
    /// CIFAR-100, python version (what torchvision's `CIFAR100` downloads).
    pub fn cifar100() -> Archive {
        Archive::new(
            "CIFAR-100",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            "cifar-100-python",
        )
    }
    /// CIFAR-100, binary version.
    pub fn cifar100_binary() -> Archive {
        Archive::new(
            "CIFAR-100 (binary)",
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            "03b5dce01913d631647c71ecec9e9cb8",
            "cifar-100-binary",
        )
    }
    /// The same archive from another address first (a mirror, a local server); the official
    /// address stays as the fallback.
    pub fn mirror(mut self, url: impl Into<String>) -> Archive {
        self.urls.insert(0, url.into());
        self
    }
}

/// How to download.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DownloadConfig {
    /// Print a progress line (rewritten in place with `\r`, at most twice a second).
    pub progress: bool,
    /// Keep the archive after extraction (torchvision keeps it); `false` frees its space.
    pub keep_archive: bool,
    /// Seconds to wait for a connection and for the server's answer before deciding the host
    /// is unreachable. The body itself has no time limit (2.64 GB can take an hour); a stalled
    /// download can be interrupted and resumed.
    pub timeout_s: u64,
}

impl Default for DownloadConfig {
    /// Progress on, archive kept, 30 s timeout.
    fn default() -> Self {
        DownloadConfig { progress: true, keep_archive: true, timeout_s: 30 }
    }
}

/// Downloads and extracts STL-10 into `dir`, returning `dir/stl10_binary`; see [`download`].
///
/// # Errors
/// As [`download`].
pub fn stl10(dir: impl AsRef<Path>) -> Result<PathBuf> {
    download(&Archive::stl10(), dir, &DownloadConfig::default())
}

/// Downloads and extracts CIFAR-10 (python version) into `dir`, returning
/// `dir/cifar-10-batches-py`; see [`download`].
///
/// # Errors
/// As [`download`].
pub fn cifar10(dir: impl AsRef<Path>) -> Result<PathBuf> {
    download(&Archive::cifar10(), dir, &DownloadConfig::default())
}

/// Downloads and extracts CIFAR-100 (python version) into `dir`, returning
/// `dir/cifar-100-python`; see [`download`].
///
/// # Errors
/// As [`download`].
pub fn cifar100(dir: impl AsRef<Path>) -> Result<PathBuf> {
    download(&Archive::cifar100(), dir, &DownloadConfig::default())
}

/// Makes sure `dir/<archive.folder>` exists: returns at once when it does; otherwise downloads
/// the archive into `dir` (resuming a `.part` file, skipping the download when a complete
/// archive with the right md5 is already there), checks its md5 and extracts it.
///
/// # Errors
/// [`Error::Data`] when no address can be reached (with what to download by hand and where to
/// extract it), the server answers with an error, the download is interrupted (run again to
/// resume), the md5 does not match (the damaged file is deleted), or the archive does not hold
/// `archive.folder`; [`Error::Io`] for local file errors.
pub fn download(archive: &Archive, dir: impl AsRef<Path>, cfg: &DownloadConfig) -> Result<PathBuf> {
    let dir = dir.as_ref();
    if archive.urls.is_empty() {
        return Err(Error::Config(format!("archive {} has no URL to download from", archive.name)));
    }
    let target = dir.join(&archive.folder);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(dir)?;
    let file = dir.join(&archive.file_name);
    if file.is_file() {
        match &archive.md5 {
            Some(expected) if &md5_file(&file)? != expected => {
                println!("{}: {} does not match its md5; downloading it again", archive.name, file.display());
                std::fs::remove_file(&file)?;
            }
            _ => {}
        }
    }
    if !file.is_file() {
        let mut unreachable = Vec::new();
        let mut done = false;
        for url in &archive.urls {
            match fetch(url, &file, archive.md5.as_deref(), cfg) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(Fetch::Unreachable(why)) => unreachable.push(format!("{url} ({why})")),
                Err(Fetch::Failed(e)) => return Err(e),
            }
        }
        if !done {
            return Err(Error::Data(format!(
                "could not reach {}: you seem offline. Download {} by hand from {} and extract it into {} \
                 (it must create {})",
                unreachable.join(", "),
                archive.file_name,
                archive.urls.join(" or "),
                dir.display(),
                target.display()
            )));
        }
    }
    if cfg.progress {
        println!("{}: extracting {} into {}", archive.name, archive.file_name, dir.display());
    }
    extract_folder(&file, dir, &archive.folder)?;
    if !cfg.keep_archive {
        std::fs::remove_file(&file)?;
    }
    Ok(target)
}

/// Why a fetch failed: the host could not be reached (try the next address), or anything else.
enum Fetch {
    Unreachable(String),
    Failed(Error),
}

impl From<std::io::Error> for Fetch {
    fn from(e: std::io::Error) -> Self {
        Fetch::Failed(e.into())
    }
}

/// Downloads `url` to `dest` through `dest.part`, resuming that file when it exists, and
/// checks the md5 of the whole file before renaming it into place.
fn fetch(url: &str, dest: &Path, md5: Option<&str>, cfg: &DownloadConfig) -> std::result::Result<(), Fetch> {
    let part = part_path(dest);
    let mut start = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let timeout = Some(Duration::from_secs(cfg.timeout_s.max(1)));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(timeout)
        .timeout_recv_response(timeout)
        .timeout_recv_body(None)
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(url).header("Accept-Encoding", "identity");
    if start > 0 {
        request = request.header("Range", format!("bytes={start}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(e) if is_unreachable(&e) => return Err(Fetch::Unreachable(e.to_string())),
        Err(e) => return Err(Fetch::Failed(Error::Data(format!("downloading {url} failed: {e}")))),
    };
    let status = response.status().as_u16();
    let total_header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (append, total) = match status {
        206 => {
            // "bytes 100-999/1000": the server resumes where asked.
            let range = total_header("content-range").unwrap_or_default();
            let first = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.trim().parse::<u64>().ok());
            if first != Some(start) {
                return Err(Fetch::Failed(Error::Data(format!(
                    "downloading {url}: asked to resume at byte {start}, the server sent '{range}'; delete {} and run again",
                    part.display()
                ))));
            }
            let total = range.rsplit('/').next().and_then(|t| t.parse::<u64>().ok());
            (true, total)
        }
        200 => {
            if start > 0 && cfg.progress {
                println!("{url}: the server does not resume downloads; starting over");
            }
            start = 0;
            (false, total_header("content-length").and_then(|l| l.parse::<u64>().ok()))
        }
        416 if start > 0 => {
            // Nothing left to send: the partial file is already complete (or too long).
            (true, Some(start))
        }
        _ => {
            return Err(Fetch::Failed(Error::Data(format!(
                "downloading {url} failed: the server answered HTTP {status}"
            ))))
        }
    };
    let mut file = OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(&part)?;
    if status != 416 {
        let chunks = read_in_background(response.into_body().into_reader());
        let stall = Duration::from_secs(cfg.timeout_s.max(1));
        let mut progress = Progress::new(dest, start, total, cfg.progress);
        let mut writer = BufWriter::with_capacity(1 << 20, &mut file);
        loop {
            let why = match chunks.recv_timeout(stall) {
                Ok(Ok(chunk)) if chunk.is_empty() => break,
                Ok(Ok(chunk)) => {
                    writer.write_all(&chunk)?;
                    progress.add(chunk.len() as u64);
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(RecvTimeoutError::Timeout) => format!("no data for {} s", stall.as_secs()),
                Err(RecvTimeoutError::Disconnected) => "the reader stopped".into(),
            };
            writer.flush()?;
            progress.finish();
            return Err(Fetch::Failed(Error::Data(format!(
                "download of {url} interrupted after {} bytes ({why}); run again to resume from {}",
                thousands(progress.done),
                part.display()
            ))));
        }
        writer.flush()?;
        progress.finish();
    }
    file.sync_all()?;
    drop(file);
    if let Some(expected) = md5 {
        let got = md5_file(&part).map_err(Fetch::Failed)?;
        if got != expected.to_ascii_lowercase() {
            std::fs::remove_file(&part)?;
            return Err(Fetch::Failed(Error::Data(format!(
                "md5 mismatch for {} downloaded from {url}: expected {expected}, got {got}; the damaged file was deleted, \
                 run again to download it afresh",
                dest.display()
            ))));
        }
    }
    std::fs::rename(&part, dest)?;
    Ok(())
}

/// Reads a response body on its own thread and hands over chunks (an empty chunk at the end).
///
/// Why a thread: ureq has no idle timeout, only a total one, and a 2.64 GB download may rightly
/// take an hour. Waiting on the channel with a timeout notices a stalled connection, so the
/// cell ends with "run again to resume" instead of hanging (interrupting a cell would end the
/// evcxr kernel). A stalled reader thread ends when its connection finally closes.
fn read_in_background(mut body: impl Read + Send + 'static) -> Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = sync_channel(16);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; 1 << 16];
        match body.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() || n == 0 {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    });
    rx
}

/// Whether a request failed because the host cannot be reached at all (offline, DNS, refused).
fn is_unreachable(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::AddrNotAvailable
                | K::TimedOut
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::NetworkDown
        ),
        _ => false,
    }
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

/// The md5 of a file as lower-case hex.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read.
pub fn md5_file(path: impl AsRef<Path>) -> Result<String> {
    let mut file = File::open(path.as_ref())?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Extracts a `.tar.gz` into `dir` (entries that would land outside `dir` are refused).
///
/// # Errors
/// [`Error::Data`] naming the archive when it is not a valid gzip-compressed tar.
pub fn extract_tar_gz(archive: impl AsRef<Path>, dir: impl AsRef<Path>) -> Result<()> {
    let archive = archive.as_ref();
    let file = File::open(archive)?;
    std::fs::create_dir_all(dir.as_ref())?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    tar.set_overwrite(true);
    tar.unpack(dir.as_ref()).map_err(|e| {
        Error::Data(format!("could not extract {}: {e}; delete it and download it again", archive.display()))
    })
}

/// Extracts into a temporary folder beside the target, then moves `folder` into place, so a
/// half-extracted dataset never looks complete.
fn extract_folder(archive: &Path, dir: &Path, folder: &str) -> Result<()> {
    let tmp = dir.join(format!(".{folder}.extracting"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    extract_tar_gz(archive, &tmp)?;
    let inner = tmp.join(folder);
    if !inner.is_dir() {
        let found: Vec<String> = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        std::fs::remove_dir_all(&tmp)?;
        return Err(Error::Data(format!(
            "{} does not hold the folder {folder}/ (found {found:?}); is it the right archive?",
            archive.display()
        )));
    }
    std::fs::rename(&inner, dir.join(folder))?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// A sparse progress line: "stl10_binary.tar.gz: 1.2 GB of 2.6 GB (45%), 12.3 MB/s".
struct Progress {
    name: String,
    start: u64,
    done: u64,
    total: Option<u64>,
    began: Instant,
    last: Instant,
    on: bool,
    line: StatusLine,
}

impl Progress {
    fn new(dest: &Path, start: u64, total: Option<u64>, on: bool) -> Progress {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let now = Instant::now();
        if on && start > 0 {
            println!("{name}: resuming at {}", human(start));
        }
        Progress { name, start, done: start, total, began: now, last: now, on, line: StatusLine::default() }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.on && self.last.elapsed() >= Duration::from_millis(500) {
            self.last = Instant::now();
            self.print();
        }
    }

    fn print(&mut self) {
        let text = self.text();
        self.line.redraw(&text);
    }

    fn text(&self) -> String {
        let secs = self.began.elapsed().as_secs_f64().max(1e-3);
        let rate = (self.done - self.start) as f64 / secs;
        let of = match self.total {
            Some(t) if t > 0 => format!(" of {} ({:.0}%)", human(t), 100.0 * self.done as f64 / t as f64),
            _ => String::new(),
        };
        format!("{}: {}{of}, {}/s", self.name, human(self.done), human(rate as u64))
    }

    fn finish(&mut self) {
        if self.on {
            let text = self.text();
            self.line.finish(&text);
        }
    }
}

/// Bytes for people: "512 B", "12.3 MB", "2.64 GB".
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
