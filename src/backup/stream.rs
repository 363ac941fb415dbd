//! Readers and writers that watch bytes go by: hashing for checksums, counting for progress.

use std::io::{self, Read, Write};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

/// Hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Reads what is left, so the checksum covers the whole object.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    pub fn finish(self) -> (u64, String) {
        (self.size, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Signals once, when the first bytes come through: for `pg_dump`, proof that it has started and
/// imported its snapshot.
pub struct FirstOutput<R> {
    inner: R,
    signal: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<R: Read> FirstOutput<R> {
    pub fn new(inner: R, signal: tokio::sync::oneshot::Sender<()>) -> Self {
        Self {
            inner,
            signal: Some(signal),
        }
    }
}

impl<R: Read> Read for FirstOutput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0
            && let Some(signal) = self.signal.take()
        {
            let _ = signal.send(());
        }
        Ok(n)
    }
}

/// Advances a progress bar and counts bytes read through it.
pub struct ProgressReader<R> {
    inner: R,
    bar: ProgressBar,
    pub count: u64,
}

impl<R: Read> ProgressReader<R> {
    pub fn new(inner: R, bar: ProgressBar) -> Self {
        Self {
            inner,
            bar,
            count: 0,
        }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Advances a progress bar by the bytes written through it.
pub struct ProgressWriter<W> {
    pub inner: W,
    pub bar: ProgressBar,
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts bytes written through it (the size before compression).
pub struct CountingWriter<W> {
    pub inner: W,
    pub count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_output_signals_on_the_first_bytes_only() {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let mut r = FirstOutput::new(&b"PGDMP"[..], tx);
        assert!(rx.try_recv().is_err(), "no signal before reading");
        let mut buf = [0u8; 2];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(rx.try_recv(), Ok(()));
        r.read_exact(&mut buf).unwrap();
    }

    #[test]
    fn hashing_reader_matches_a_direct_hash() {
        let data = b"\xe1\x9e\x81\xe1\x9f\x81\xe1\x9e\x8f\xe1\x9f\x92\xe1\x9e\x8f".repeat(1000);
        let mut r = HashingReader::new(&data[..]);
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        r.drain().unwrap();
        let (size, sha) = r.finish();
        assert_eq!(size, data.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
    }
}
