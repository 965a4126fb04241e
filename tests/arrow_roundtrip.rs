//! pyarrow <-> uqa round trip through the committed fixtures of
//! `scripts/fixtures/gen_arrow_fixtures.py` (see its docstring for the protocol):
//! files pyarrow writes in the reference layout load here with the same content, and uqa's
//! writer produces exactly the bytes pyarrow was shown to read.

use std::path::{Path, PathBuf};

use serde_json::Value;
use uqa_data::reader::SequenceFile;
use uqa_data::schema::{Columns, Feature, Vocab};
use uqa_data::writer::{Position, SequenceWriter};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arrow")
}

fn expected() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn bags(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn pyarrow_written_file_loads_with_identical_content() {
    let file = SequenceFile::open(fixtures().join("pyarrow_written.arrow")).unwrap();
    let rows = expected();
    assert_eq!(file.num_rows(), rows.len());
    assert_eq!(
        file.num_batches(),
        2,
        "the fixture spans two record batches"
    );
    assert!(
        file.vocab().is_none(),
        "pyarrow files carry no uqa metadata"
    );
    for (i, want) in rows.iter().enumerate() {
        let row = file.row(i);
        for f in Feature::ALL {
            let want_bags = bags(&want[f.column()]);
            assert_eq!(row.len(), want_bags.len(), "row {i}");
            for (p, bag) in want_bags.iter().enumerate() {
                assert_eq!(
                    row.bag(f, p),
                    &bag[..],
                    "row {i} {} position {p}",
                    f.column()
                );
            }
            if f.is_single_id() {
                let ids: Vec<i64> = want_bags.iter().map(|b| b[0]).collect();
                assert_eq!(row.ids(f), &ids[..]);
            }
        }
        assert_eq!(row.text(), want["text"].as_str());
    }
}

/// uqa's writer fed the fixture's rows. With `UQA_WRITE_FIXTURES=1` it (re)writes the committed
/// fixture, which the generator script then checks with pyarrow.
#[test]
fn uqa_writer_output_is_the_file_pyarrow_verified() {
    let dir = tempfile::tempdir().unwrap();
    let golden = fixtures().join("uqa_written.arrow");
    let out = if std::env::var_os("UQA_WRITE_FIXTURES").is_some() {
        golden.clone()
    } else {
        dir.path().join("uqa_written.arrow")
    };
    let columns = Columns {
        text: true,
        ..Default::default()
    };
    let mut w = SequenceWriter::create(&out, columns, &Vocab::REFERENCE, 0).unwrap();
    let mut b = w.builder();
    for row in expected() {
        let features: Vec<Vec<Vec<i64>>> = Feature::ALL
            .iter()
            .map(|f| bags(&row[f.column()]))
            .collect();
        b.begin_row(0);
        // Index by position across the ten per-feature lists.
        #[allow(clippy::needless_range_loop)]
        for p in 0..features[0].len() {
            let bag = |k: usize| &features[k][p][..];
            b.push_position(&Position {
                ids: std::array::from_fn(|k| bag(k)[0]),
                bags: std::array::from_fn(|k| bag(5 + k)),
                timestamp: 0,
            });
        }
        b.end_row(row["text"].as_str(), None);
    }
    w.write(&mut b).unwrap();
    w.finish().unwrap();

    let ours = std::fs::read(&out).unwrap();
    let verified = std::fs::read(&golden).expect("committed fixture uqa_written.arrow");
    assert!(
        ours == verified,
        "uqa's writer output changed: regenerate with UQA_WRITE_FIXTURES=1 and re-check with \
         scripts/fixtures/gen_arrow_fixtures.py --check-only"
    );
    // And it reads back through our own reader with the same content.
    let file = SequenceFile::open(&out).unwrap();
    assert_eq!(file.vocab(), Some(Vocab::REFERENCE));
    assert_eq!(file.row(1).ids(Feature::ItemId), &[994_446]);
    assert_eq!(file.row(3).bag(Feature::TitleTokens, 1), &[] as &[i64]);
}

#[test]
fn pyarrow_stream_format_is_refused_with_a_hint() {
    let err = SequenceFile::open(fixtures().join("pyarrow_stream.arrow"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pyarrow_stream.arrow") && err.contains("stream"),
        "{err}"
    );
}

#[test]
fn pyarrow_ragged_row_names_row_and_column() {
    let err = SequenceFile::open(fixtures().join("pyarrow_ragged.arrow"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pyarrow_ragged.arrow: row 1")
            && err.contains("uni_seq_title_bpe_token_ids")
            && err.contains("has 0 positions"),
        "{err}"
    );
}

#[test]
fn pyarrow_wrong_column_type_names_column_and_types() {
    let err = SequenceFile::open(fixtures().join("pyarrow_wrong_type.arrow"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`uni_seq_item_id`") && err.contains("Int32") && err.contains("Int64"),
        "{err}"
    );
}
