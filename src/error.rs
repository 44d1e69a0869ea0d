//! One error type for the whole kit (candle's style): every public function returns
//! [`Result`], and every message says what was wrong and what to do about it.

/// Everything that can go wrong in selfsup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by libtorch (through tch).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A file could not be read or written.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An image could not be encoded or decoded.
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
    /// An ndarray could not be built with the requested shape.
    #[error("ndarray shape: {0}")]
    NdShape(#[from] ndarray::ShapeError),
    /// JSON (configs, histories) could not be read or written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A configuration value is out of range; the message names the field and the valid range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument or tensor.
        what: String,
        /// The shape that was expected, in words (e.g. "[N, 3, H, W]").
        expected: String,
        /// The shape that was found.
        got: Vec<i64>,
    },
    /// Data on disk or in memory is not what it should be (format, range, missing file).
    #[error("data: {0}")]
    Data(String),
    /// Training stopped because the loss became NaN or infinite; the message names the step
    /// and the likely causes.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// Training stopped at the user's request (Ctrl-C, SIGTERM) after writing a checkpoint; the
    /// message says how to continue.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A run folder is in use by another process; the message names its PID.
    #[error("locked: {0}")]
    Locked(String),
    /// A rendezvous or collective of `selfsup::distributed` failed (a rank that cannot reach the
    /// store, a peer that died, a timeout); the message names the rank, the operation and the
    /// address involved.
    #[error("distributed: {0}")]
    Distributed(String),
    /// A plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Shape`] for `what`, expected `expected`, found `got`.
    pub fn shape(what: impl Into<String>, expected: impl Into<String>, got: &[i64]) -> Self {
        Error::Shape { what: what.into(), expected: expected.into(), got: got.to_vec() }
    }
}

/// Shorthand for returning an [`Error::Config`] with a formatted message.
macro_rules! config_err {
    ($($arg:tt)*) => { $crate::error::Error::Config(format!($($arg)*)) };
}
pub(crate) use config_err;
