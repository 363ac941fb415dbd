//! The writing end of a streamed upload: blocking code (compressors, tar) writes into an
//! `ObjectSink`, which hashes and counts every byte and hands fixed-size parts to the async
//! uploader through a bounded channel, so memory stays bounded whatever the object's size.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// What the uploader receives. An upload completes only on `End`: a channel that closes without
/// it means the producer failed, and the upload is abandoned.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    End,
}

/// S3 allows 10,000 parts of at least 5 MiB. Parts start at 8 MiB and double every 1,000 parts
/// (up to 512 MiB), so memory stays small for usual dumps and multi-terabyte ones still fit.
pub fn part_size(part_index: usize) -> usize {
    const BASE: usize = 8 * 1024 * 1024;
    BASE << (part_index / 1000).min(6)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSummary {
    pub size_bytes: u64,
    pub sha256: String,
}

pub struct ObjectSink {
    tx: mpsc::Sender<Chunk>,
    buffer: BytesMut,
    parts_sent: usize,
    hasher: Sha256,
    size: u64,
}

impl ObjectSink {
    pub fn new(tx: mpsc::Sender<Chunk>) -> Self {
        Self {
            tx,
            buffer: BytesMut::with_capacity(part_size(0)),
            parts_sent: 0,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn send(&mut self, chunk: Chunk) -> io::Result<()> {
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    fn flush_part(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let next = part_size(self.parts_sent + 1);
        let part = std::mem::replace(&mut self.buffer, BytesMut::with_capacity(next)).freeze();
        self.parts_sent += 1;
        self.send(Chunk::Data(part))
    }

    /// Sends what is left and the end marker; only then may the uploader complete the object.
    pub fn finish(mut self) -> io::Result<SinkSummary> {
        self.flush_part()?;
        self.send(Chunk::End)?;
        Ok(SinkSummary {
            size_bytes: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

impl Write for ObjectSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        let mut rest = data;
        while !rest.is_empty() {
            let room = part_size(self.parts_sent) - self.buffer.len();
            let take = room.min(rest.len());
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buffer.len() >= part_size(self.parts_sent) {
                self.flush_part()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_at_least_five_mib_and_grow() {
        assert!(part_size(0) >= 5 * 1024 * 1024);
        assert_eq!(part_size(999), part_size(0));
        assert_eq!(part_size(1000), 2 * part_size(0));
        assert_eq!(part_size(9999), 512 * 1024 * 1024);
        let total: usize = (0..10_000).map(part_size).sum();
        assert!(
            total as u64 > 1_000_000_000_000,
            "10,000 parts hold over 1 TB"
        );
    }

    #[test]
    fn sink_splits_into_parts_hashes_and_ends() {
        let (tx, mut rx) = mpsc::channel(64);
        let handle = std::thread::spawn(move || {
            let mut sink = ObjectSink::new(tx);
            let block = vec![7u8; 3 * 1024 * 1024];
            for _ in 0..6 {
                sink.write_all(&block).unwrap();
            }
            sink.finish().unwrap()
        });
        let mut sizes = vec![];
        let mut hasher = Sha256::new();
        loop {
            match rx.blocking_recv() {
                Some(Chunk::Data(b)) => {
                    hasher.update(&b);
                    sizes.push(b.len());
                }
                Some(Chunk::End) => break,
                None => panic!("channel closed without End"),
            }
        }
        let summary = handle.join().unwrap();
        assert_eq!(
            sizes,
            vec![8 * 1024 * 1024, 8 * 1024 * 1024, 2 * 1024 * 1024]
        );
        assert_eq!(summary.size_bytes, 18 * 1024 * 1024);
        assert_eq!(summary.sha256, hex::encode(hasher.finalize()));
    }
}
