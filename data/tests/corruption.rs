//! Byte-level corruption anywhere in a file must give an error or (when the flip lands in plain
//! data) a readable file, and never a panic. Alone in its test binary because it installs a
//! process-wide panic hook to count panics, including those caught inside the reader.

use std::sync::atomic::{AtomicUsize, Ordering};

use uqa_data::reader::SequenceFile;
use uqa_data::rng::Rng;
use uqa_data::schema::{Columns, Vocab};
use uqa_data::validate::validate;
use uqa_data::writer::{Position, SequenceWriter};

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn flipped_bytes_never_panic() {
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, Ordering::SeqCst);
    }));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.arrow");
    let columns = Columns {
        user_id: true,
        timestamps: true,
        text: true,
        task: false,
    };
    let mut w = SequenceWriter::create(&good, columns, &Vocab::REFERENCE, 1).unwrap();
    let mut b = w.builder();
    for u in 0..3 {
        b.begin_row(u);
        for p in 0..4 {
            b.push_position(&Position {
                ids: [1 + p, 2, 3, 4, 5],
                bags: [&[1, 2], &[], &[3], &[4, 5, 6], &[7]],
                timestamp: p,
            });
        }
        b.end_row(Some("[]"), None);
        if u == 1 {
            w.write(&mut b).unwrap();
        }
    }
    w.write(&mut b).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let mut rng = Rng::new(11);
    let (mut errors, mut readable) = (0, 0);
    for trial in 0..600 {
        let mut bad = bytes.clone();
        // Every byte once over the first trials, then random multi-byte damage.
        let flips = if trial < bytes.len().min(400) {
            1
        } else {
            1 + rng.below(8) as usize
        };
        for k in 0..flips {
            let at = if flips == 1 {
                trial % bytes.len()
            } else {
                rng.below(bytes.len() as u64) as usize
            };
            bad[at] ^= if k % 2 == 0 { 0xFF } else { 1 << rng.below(8) };
        }
        let p = dir.path().join("bad.arrow");
        std::fs::write(&p, &bad).unwrap();
        match SequenceFile::open(&p) {
            Ok(f) => {
                // A readable file must also survive a full scan and validation.
                let _ = validate(&f, None);
                for row in f.rows() {
                    let _ = row.len();
                }
                readable += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("bad.arrow"), "{e}");
                errors += 1;
            }
        }
    }
    let _ = std::panic::take_hook();
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "panics while reading corrupt files"
    );
    assert!(
        errors > 100 && readable > 0,
        "errors {errors}, readable {readable}"
    );
}
