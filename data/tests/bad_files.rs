//! Bad input to the reader and validator: every case ends in an error that names the file (and
//! the row, position and column where there is one), never in a panic.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use uqa_data::reader::SequenceFile;
use uqa_data::schema::{Columns, Feature, Vocab};
use uqa_data::validate::validate;
use uqa_data::writer::{Position, SequenceWriter};

const VOCAB: Vocab = Vocab {
    items: 10,
    cates: 4,
    brands: 4,
    shops: 4,
    sellers: 4,
    tokens: 50,
};

/// Write rows of item ids (all other ids 1, one token per bag) with uqa's writer.
fn write_rows(path: &Path, rows: &[Vec<i64>]) {
    let mut w = SequenceWriter::create(path, Columns::default(), &VOCAB, 1).unwrap();
    let mut b = w.builder();
    let tok = [7i64];
    for (u, items) in rows.iter().enumerate() {
        b.begin_row(u as i64);
        for &item in items {
            b.push_position(&Position {
                ids: [item, 1, 1, 1, 1],
                bags: [&tok; 5],
                timestamp: 0,
            });
        }
        b.end_row(None, None);
    }
    w.write(&mut b).unwrap();
    w.finish().unwrap();
}

fn open_err(path: &Path) -> String {
    SequenceFile::open(path).unwrap_err().to_string()
}

#[test]
fn truncated_file_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.arrow");
    write_rows(&good, &[vec![1, 2, 3], vec![4, 5]]);
    let bytes = std::fs::read(&good).unwrap();
    for cut in [
        0,
        5,
        100,
        bytes.len() / 2,
        bytes.len() - 11,
        bytes.len() - 1,
    ] {
        let p = dir.path().join(format!("cut{cut}.arrow"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = open_err(&p);
        assert!(
            err.contains(&format!("cut{cut}.arrow")),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn missing_file_names_the_path() {
    let err = open_err(Path::new("/nonexistent/dir/x.arrow"));
    assert!(err.contains("/nonexistent/dir/x.arrow"), "{err}");
}

#[test]
fn missing_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nine.arrow");
    let ll = uqa_data::schema::feature_type();
    let fields: Vec<Field> = Feature::ALL[..9]
        .iter()
        .map(|f| Field::new(f.column(), ll.clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let inner = ListArray::new(
        Arc::new(Field::new_list_field(DataType::Int64, true)),
        OffsetBuffer::new(ScalarBuffer::from(vec![0, 1])),
        Arc::new(Int64Array::from(vec![1])),
        None,
    );
    let outer: ArrayRef = Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(inner.data_type().clone(), true)),
        OffsetBuffer::new(ScalarBuffer::from(vec![0, 1])),
        Arc::new(inner),
        None,
    ));
    let batch = RecordBatch::try_new(schema.clone(), vec![outer; 9]).unwrap();
    let mut w = FileWriter::try_new(std::fs::File::create(&p).unwrap(), &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let err = open_err(&p);
    assert!(
        err.contains("nine.arrow: missing column `uni_seq_seller_bpe_token_ids`"),
        "{err}"
    );
}

#[test]
fn ids_outside_the_vocabulary_name_row_position_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ids.arrow");
    write_rows(&p, &[vec![1, 2], vec![3, 10, 4]]);
    let file = SequenceFile::open(&p).unwrap();
    let err = validate(&file, None).unwrap_err().to_string();
    assert!(
        err.contains("ids.arrow: row 1, position 1: column `uni_seq_item_id` holds id 10"),
        "{err}"
    );
    // Id 0 is padding, not a valid click.
    write_rows(&p, &[vec![0]]);
    let err = validate(&SequenceFile::open(&p).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("row 0, position 0") && err.contains("id 0"),
        "{err}"
    );
    // A larger vocabulary given explicitly accepts the file.
    write_rows(&p, &[vec![1, 2], vec![3, 10, 4]]);
    let big = Vocab { items: 11, ..VOCAB };
    let report = validate(&SequenceFile::open(&p).unwrap(), Some(big)).unwrap();
    assert_eq!((report.rows, report.positions), (2, 5));
}

#[test]
fn empty_sequence_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.arrow");
    write_rows(&p, &[vec![1], vec![], vec![2]]);
    let err = validate(&SequenceFile::open(&p).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.arrow: row 1: empty sequence"), "{err}");
}

#[test]
fn two_ids_in_an_id_column_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bag.arrow");
    let w = SequenceWriter::create(&p, Columns::default(), &VOCAB, 1).unwrap();
    let mut b = w.builder();
    // The writer cannot put two ids in an id column; build a valid batch, then replace its
    // category column by one whose only bag holds two ids.
    b.begin_row(0);
    b.push_position(&Position {
        ids: [1, 1, 1, 1, 1],
        bags: [&[]; 5],
        timestamp: 0,
    });
    b.end_row(None, None);
    let batch = b.finish().unwrap();
    let schema = batch.schema();
    let cate = schema.index_of(Feature::CateId.column()).unwrap();
    let two = ListArray::new(
        Arc::new(Field::new_list_field(DataType::Int64, true)),
        OffsetBuffer::new(ScalarBuffer::from(vec![0, 2])),
        Arc::new(Int64Array::from(vec![1, 2])),
        None,
    );
    let bad: ArrayRef = Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(two.data_type().clone(), true)),
        OffsetBuffer::new(ScalarBuffer::from(vec![0, 1])),
        Arc::new(two),
        None,
    ));
    let mut cols = batch.columns().to_vec();
    cols[cate] = bad;
    drop(w);
    let mut fw = FileWriter::try_new(std::fs::File::create(&p).unwrap(), &schema).unwrap();
    fw.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
        .unwrap();
    fw.finish().unwrap();
    let err = open_err(&p);
    assert!(
        err.contains("bag.arrow: row 0, position 0: column `uni_seq_cate_id` must hold exactly one id, found 2"),
        "{err}"
    );
}

#[test]
fn not_an_arrow_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data.csv");
    std::fs::write(&p, "user,item\n1,2\n3,4\n5,6\n").unwrap();
    let err = open_err(&p);
    assert!(err.contains("data.csv: not an Arrow IPC file"), "{err}");
}
