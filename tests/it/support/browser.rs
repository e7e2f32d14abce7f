//! A real browser for the tests that look at a page as a person would: Debian's headless
//! Chromium (`/usr/bin/chromium`, which scripts/test.sh installs), run once per look in a
//! directory of its own with a deadline. [`screenshot`] decodes the picture it takes into RGB
//! ([`Screenshot`], with colour counts over regions); [`dump_dom`] returns the page's DOM once
//! loaded.
//!
//! Chromium runs in a process group of its own; past the deadline the whole group (the browser
//! and its renderer, GPU and zygote processes) is killed by its id, so a hung browser cannot
//! outlive the test.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::run_collecting;
use super::tempdir::TempDir;

/// Debian's Chromium launcher, by its path: another browser on PATH is not what was tested.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one look at a page may take (start, load, picture, exit) on a busy machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// A screenshot: `width` × `height` pixels, `rgb` three bytes a pixel, row by row from the top
/// left; `png` the file Chromium wrote, as it wrote it.
pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub png: Vec<u8>,
}

/// A rectangle of a screenshot in pixels: `x`, `y` its top left corner, `w` × `h` its size
/// (cut to the picture).
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Screenshot {
    /// The whole picture as a region.
    pub fn all(&self) -> Region {
        Region {
            x: 0,
            y: 0,
            w: self.width,
            h: self.height,
        }
    }

    /// The band of rows `from..to` (pixels from the top), full width.
    pub fn rows(&self, from: u32, to: u32) -> Region {
        Region {
            x: 0,
            y: from,
            w: self.width,
            h: to.saturating_sub(from),
        }
    }

    /// The colour at (`x`, `y`).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(x < self.width && y < self.height, "({x}, {y}) is outside");
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Pixels of `region` whose every channel is within `tolerance` of `colour`'s.
    pub fn count_close_in(&self, region: Region, colour: [u8; 3], tolerance: u8) -> usize {
        let x_end = region.x.saturating_add(region.w).min(self.width);
        let y_end = region.y.saturating_add(region.h).min(self.height);
        let mut count = 0;
        for y in region.y..y_end {
            for x in region.x..x_end {
                if close(self.pixel(x, y), colour, tolerance) {
                    count += 1;
                }
            }
        }
        count
    }

    /// Pixels of the whole picture within `tolerance` of `colour` (every channel).
    pub fn count_close(&self, colour: [u8; 3], tolerance: u8) -> usize {
        self.count_close_in(self.all(), colour, tolerance)
    }

    /// The rows (from the top) holding at least `min` pixels close to `colour`, as the first
    /// and last such row; `None` when none does.
    pub fn rows_of(&self, colour: [u8; 3], tolerance: u8, min: usize) -> Option<(u32, u32)> {
        let rows: Vec<u32> = (0..self.height)
            .filter(|&y| self.count_close_in(self.rows(y, y + 1), colour, tolerance) >= min)
            .collect();
        Some((*rows.first()?, *rows.last()?))
    }
}

/// Whether every channel of `a` is within `tolerance` of `b`'s.
pub fn close(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

/// A CSS colour `#rrggbb` as RGB; panics on anything else.
pub fn hex(colour: &str) -> [u8; 3] {
    let digits = colour
        .strip_prefix('#')
        .filter(|d| d.len() == 6)
        .unwrap_or_else(|| panic!("{colour:?} is not #rrggbb"));
    let byte = |i: usize| {
        u8::from_str_radix(&digits[i..i + 2], 16)
            .unwrap_or_else(|e| panic!("{colour:?} is not #rrggbb: {e}"))
    };
    [byte(0), byte(2), byte(4)]
}

/// Opens `url` in headless Chromium with a `width` × `height` window and returns the
/// screenshot of that viewport (scrollbars hidden). Panics when Chromium is missing, fails, or
/// takes longer than the deadline (then killed), with its output.
pub fn screenshot(url: &str, width: u32, height: u32) -> Screenshot {
    let dir = TempDir::new("chromium");
    let file = dir.join("screenshot.png");
    run(
        &dir,
        &[
            "--hide-scrollbars".to_string(),
            format!("--window-size={width},{height}"),
            format!("--screenshot={}", file.display()),
            url.to_string(),
        ],
    );
    let png = fs::read(&file).unwrap_or_else(|e| {
        panic!(
            "chromium wrote no screenshot of {}: {e}",
            redact_credentials(url)
        )
    });
    decode(png)
}

/// Opens `url` in headless Chromium and returns the DOM once the page has loaded, as HTML
/// text (`--dump-dom`). Panics as [`screenshot`] does.
pub fn dump_dom(url: &str) -> String {
    let dir = TempDir::new("chromium");
    run(&dir, &["--dump-dom".to_string(), url.to_string()])
}

/// `url` with the password of its credentials (`user:TOKEN@`) replaced, for messages.
fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:<redacted>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Runs Chromium headless in `dir` (its profile, home and files there) with `args` after the
/// common ones; returns its stdout.
fn run(dir: &TempDir, args: &[String]) -> String {
    if !Path::new(CHROMIUM).exists() {
        panic!("chromium not found: scripts/test.sh installs it (apt-get install chromium)");
    }
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        // The tests run as root, which Chromium's sandbox refuses.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        "--disable-default-apps",
        "--mute-audio",
    ])
    .arg(format!("--user-data-dir={}", dir.join("profile").display()))
    .args(args)
    .current_dir(dir.path())
    .env("HOME", dir.path())
    .env_remove("DISPLAY")
    .stdin(Stdio::null())
    // A group of its own, so a timeout kills the browser's helper processes with it.
    .process_group(0);
    let (status, stdout, stderr) = run_collecting(&mut cmd, DEADLINE, |child| {
        // The group's id is the child's PID, not yet reaped, so it names no other process.
        let _ = Command::new("sh")
            .args(["-c", "kill -KILL -- \"-$0\"", &child.id().to_string()])
            .stdin(Stdio::null())
            .status();
    });
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    let shown = args
        .iter()
        .map(|a| redact_credentials(a))
        .collect::<Vec<_>>()
        .join(" ");
    match status {
        None => panic!("chromium {shown} still ran after {DEADLINE:?}; killed. stderr:\n{stderr}"),
        Some(s) if !s.success() => panic!("chromium {shown} failed ({s}); stderr:\n{stderr}"),
        Some(_) => stdout,
    }
}

/// The PNG Chromium wrote, as 8-bit RGB.
fn decode(png_bytes: Vec<u8>) -> Screenshot {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(&png_bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("the screenshot is not a PNG: {e}"));
    let mut buf = vec![
        0;
        reader
            .output_buffer_size()
            .expect("a screenshot's size fits")
    ];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("cannot decode the screenshot: {e}"));
    let pixels = (info.width * info.height) as usize;
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf[..pixels * 3].to_vec(),
        png::ColorType::Rgba => buf[..pixels * 4]
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        other => panic!("the screenshot's colour type is {other:?}, not RGB(A)"),
    };
    Screenshot {
        width: info.width,
        height: info.height,
        rgb,
        png: png_bytes,
    }
}
