//! Documents kept compressed in SQLite (issue #12 item 6): the order document, the bodies of
//! the audit log and of the outbox. JSON with Russian text compresses several times over, and a
//! smaller row also stays on its b-tree page instead of spilling to overflow pages, so each save
//! writes fewer pages to the WAL.
//!
//! A document is stored as a zstd frame in a BLOB when that is smaller, and as TEXT otherwise;
//! the value's own type says which, so rows written before this existed read as they are and no
//! migration rewrites them. PostgreSQL compresses large values itself (TOAST) and keeps TEXT.

use crate::{Result, StoreError};

/// Below this a document is kept as text: zstd's frame costs about 10 bytes and short JSON
/// (an answer, a small notification) barely compresses.
const PACK_FROM: usize = 256;

/// zstd's fastest regular level: the writer thread compresses while other units wait.
const LEVEL: i32 = 1;

/// No stored document is near this; a frame claiming more is damaged, and is refused before
/// anything is allocated for it.
const MAX_UNPACKED: u64 = 64 * 1024 * 1024;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<std::io::Result<zstd::bulk::Compressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(LEVEL));
    static DECOMPRESSOR: std::cell::RefCell<std::io::Result<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new());
}

/// The compressed form of `text`, when it is worth storing instead of the text.
pub(crate) fn pack(text: &str) -> Option<Vec<u8>> {
    // Above the bound `unpack` enforces it stays text, so that it reads back.
    if text.len() < PACK_FROM || text.len() as u64 > MAX_UNPACKED {
        return None;
    }
    // The frame records its content size, which `unpack` checks before it allocates. One
    // context per thread, kept: making one per call cost more than the compression itself.
    let packed = COMPRESSOR.with(|c| c.borrow_mut().as_mut().ok()?.compress(text.as_bytes()).ok())?;
    (packed.len() < text.len()).then_some(packed)
}

/// The text of a document stored by [`pack`].
pub fn unpack(packed: &[u8]) -> Result<String> {
    let damaged = |why: String| StoreError::DocumentDamaged(why);
    let size = match zstd::zstd_safe::get_frame_content_size(packed) {
        Ok(Some(size)) if size <= MAX_UNPACKED => size,
        Ok(Some(size)) => return Err(damaged(format!("a compressed document claims {size} bytes"))),
        Ok(None) | Err(_) => return Err(damaged("a compressed document without a readable zstd frame".into())),
    };
    let bytes = DECOMPRESSOR
        .with(|d| match d.borrow_mut().as_mut() {
            Ok(d) => d.decompress(packed, size as usize),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        })
        .map_err(|e| damaged(format!("zstd: {e}")))?;
    String::from_utf8(bytes).map_err(|e| damaged(format!("a compressed document is not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_stays_text() {
        assert_eq!(pack(r#"{"status":"created"}"#), None);
        assert_eq!(pack(&"x".repeat(PACK_FROM - 1)), None);
    }

    #[test]
    fn a_repetitive_document_shrinks_and_reads_back() {
        let doc = r#"{"id":"SKU-100245","name":"Молоко 3,2% 930 мл","quantity":"2","price":"94.99"},"#.repeat(40);
        let packed = pack(&doc).expect("worth packing");
        assert!(packed.len() * 4 < doc.len(), "{} → {}", doc.len(), packed.len());
        assert_eq!(unpack(&packed).unwrap(), doc);
    }

    #[test]
    fn damaged_frames_are_refused_not_read() {
        let packed = pack(&"Москва, Профсоюзная улица, ".repeat(40)).unwrap();
        for damaged in [&packed[..packed.len() / 2], &packed[4..], b"not zstd at all".as_slice(), &[]] {
            assert!(matches!(unpack(damaged), Err(StoreError::DocumentDamaged(_))), "{damaged:?}");
        }
        // A frame header that claims a terabyte (single segment, 8-byte content size) is
        // refused before anything is allocated for it.
        let mut lying = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        lying.extend_from_slice(&(1u64 << 40).to_le_bytes());
        match unpack(&lying) {
            Err(StoreError::DocumentDamaged(why)) => assert!(why.contains("claims"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn every_text_reads_back_as_it_was(text in "\\PC{0,2000}") {
            match pack(&text) {
                Some(packed) => {
                    prop_assert!(packed.len() < text.len());
                    prop_assert_eq!(unpack(&packed).unwrap(), text);
                }
                None => prop_assert!(text.len() < PACK_FROM || zstd::bulk::compress(text.as_bytes(), LEVEL).unwrap().len() >= text.len()),
            }
        }
    }
}
