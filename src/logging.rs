//! The server's log to stderr, with the access log written in batches.
//!
//! The access log writes a line per request: a `write(2)` per line, or a writer thread woken per
//! line (tracing-appender's channel), cost the request path a system call or a context switch
//! each (the profile showed the wake-ups at the top). Its lines (target `ecosire::access`) are
//! appended to a shared buffer under a short lock, and a flusher thread writes the buffer out
//! every `FLUSH_EVERY`, or at once when it passes `WAKE_AT` bytes. A caller finding the buffer
//! over `LIMIT` writes it out itself, so a stalled stderr slows requests down instead of growing
//! memory. Dropping the guard writes out what is left; a hard crash loses at most the last
//! `FLUSH_EVERY` of access lines. Every other line (start-up, warnings, errors) is written at
//! once, so nothing that explains a crash waits in a buffer.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const WAKE_AT: usize = 256 * 1024;
const LIMIT: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
pub struct Shared {
    buffer: Mutex<Buffer>,
    wake: Condvar,
}

impl Shared {
    fn write_out(bytes: &[u8]) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    }
}

/// A `MakeWriter` for tracing-subscriber: each line goes to the shared buffer.
#[derive(Clone)]
pub struct BatchedStderr(Arc<Shared>);

/// Writes out what is buffered and stops the flusher when dropped.
pub struct Guard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

/// The writer and the guard that must live as long as logging does.
pub fn batched_stderr() -> (BatchedStderr, Guard) {
    let shared = Arc::new(Shared::default());
    let flusher = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ecosire-log".into())
            .spawn(move || {
                let mut spare = Vec::new();
                loop {
                    let closed = {
                        let mut b = shared.buffer.lock().expect("log buffer");
                        if !b.closed && b.bytes.len() < WAKE_AT {
                            b = shared
                                .wake
                                .wait_timeout(b, FLUSH_EVERY)
                                .expect("log buffer")
                                .0;
                        }
                        std::mem::swap(&mut b.bytes, &mut spare);
                        b.closed
                    };
                    if !spare.is_empty() {
                        Shared::write_out(&spare);
                        spare.clear();
                    }
                    if closed {
                        return;
                    }
                }
            })
            .expect("spawn the log writer thread")
    };
    (
        BatchedStderr(Arc::clone(&shared)),
        Guard {
            shared,
            flusher: Some(flusher),
        },
    )
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.buffer.lock().expect("log buffer").closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

/// The target of the access log lines, the only ones batched.
pub const ACCESS_TARGET: &str = "ecosire::access";

/// One event's writer: tracing-subscriber formats a whole line, then writes it in one call.
pub enum Line {
    Batched(Arc<Shared>),
    Direct(std::io::Stderr),
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let shared = match self {
            Line::Direct(err) => return err.write(data),
            Line::Batched(shared) => shared,
        };
        let mut b = shared.buffer.lock().expect("log buffer");
        if b.closed {
            drop(b);
            Shared::write_out(data);
            return Ok(data.len());
        }
        b.bytes.extend_from_slice(data);
        let len = b.bytes.len();
        if len >= LIMIT {
            let full = std::mem::take(&mut b.bytes);
            drop(b);
            Shared::write_out(&full);
        } else if len >= WAKE_AT && len - data.len() < WAKE_AT {
            shared.wake.notify_one();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Line::Direct(err) => err.flush(),
            Line::Batched(_) => Ok(()),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line::Direct(std::io::stderr())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        if meta.target() == ACCESS_TARGET {
            Line::Batched(Arc::clone(&self.0))
        } else {
            Line::Direct(std::io::stderr())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_in_order_and_written_out_on_drop() {
        let (w, guard) = batched_stderr();
        for i in 0..1000 {
            writeln!(Line::Batched(Arc::clone(&w.0)), "line {i}").unwrap();
        }
        let buffered = {
            let b = w.0.buffer.lock().unwrap();
            String::from_utf8(b.bytes.clone()).unwrap()
        };
        // Whatever is still buffered is the tail, in order.
        let lines: Vec<&str> = buffered.lines().collect();
        if let Some(first) = lines.first() {
            let start: usize = first.trim_start_matches("line ").parse().unwrap();
            for (k, l) in lines.iter().enumerate() {
                assert_eq!(*l, format!("line {}", start + k));
            }
        }
        drop(guard);
        assert!(w.0.buffer.lock().unwrap().bytes.is_empty(), "written out");
    }
}
