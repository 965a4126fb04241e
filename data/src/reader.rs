//! Reading sequence files: the Arrow IPC file is memory-mapped and its record batches decoded in
//! place (no column is copied), then checked once at open: schema, nulls, one id per position in
//! the id columns, and equal sequence lengths across the feature columns of every row. After
//! that, row access is plain slice indexing.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, Int64Array, ListArray, RecordBatch, StringArray};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_ipc::reader::{FileDecoder, read_footer_length};
use arrow_ipc::{Block, MessageHeader, root_as_footer, root_as_message};
use arrow_schema::{DataType, Schema, SchemaRef};
use memmap2::Mmap;

use crate::error::{DataError, Result};
use crate::schema::{
    Feature, ID_BASE_METADATA_KEY, TASK_COLUMN, TEXT_COLUMN, TIMESTAMP_COLUMN, USER_ID_COLUMN,
    VOCAB_METADATA_KEY, Vocab, feature_type, timestamp_type,
};

const MAGIC: &[u8; 6] = b"ARROW1";

/// One `list<list<int64>>` column of one record batch, as three flat buffers.
#[derive(Debug, Clone)]
struct NestedColumn {
    /// Row r covers bags `rows[r]..rows[r + 1]`.
    rows: ScalarBuffer<i32>,
    /// Bag b covers values `bags[b]..bags[b + 1]`.
    bags: ScalarBuffer<i32>,
    values: ScalarBuffer<i64>,
}

impl NestedColumn {
    fn row_len(&self, row: usize) -> usize {
        (self.rows[row + 1] - self.rows[row]) as usize
    }
}

#[derive(Debug, Clone)]
struct BatchColumns {
    features: Vec<NestedColumn>,
    user_ids: Option<ScalarBuffer<i64>>,
    timestamps: Option<(ScalarBuffer<i32>, ScalarBuffer<i64>)>,
    text: Option<StringArray>,
    task: Option<StringArray>,
    /// File byte range of this batch, to release its pages after a streaming scan.
    byte_range: (usize, usize),
}

/// A memory-mapped sequence file in the reference layout.
#[derive(Debug)]
pub struct SequenceFile {
    path: PathBuf,
    schema: SchemaRef,
    mmap: Arc<Mmap>,
    batches: Vec<BatchColumns>,
    /// `row_starts[b]` is the global index of batch b's first row; one extra entry at the end.
    row_starts: Vec<usize>,
    vocab: Option<Vocab>,
    id_base: i64,
}

/// A borrowed view of one row (one user's sequence).
#[derive(Debug, Clone, Copy)]
pub struct SequenceRow<'a> {
    batch: &'a BatchColumns,
    row: usize,
    /// Global row index in the file.
    pub index: usize,
}

impl<'a> SequenceRow<'a> {
    /// Number of positions (interactions).
    pub fn len(&self) -> usize {
        self.batch.features[0].row_len(self.row)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of a single-id feature at every position (one id per position, checked at open).
    pub fn ids(&self, feature: Feature) -> &'a [i64] {
        debug_assert!(feature.is_single_id());
        let c = &self.batch.features[feature.index()];
        let first_bag = c.rows[self.row] as usize;
        let start = c.bags[first_bag] as usize;
        &c.values[start..start + self.len()]
    }

    /// The bag of ids of any feature at one position.
    pub fn bag(&self, feature: Feature, position: usize) -> &'a [i64] {
        let c = &self.batch.features[feature.index()];
        let b = c.rows[self.row] as usize + position;
        &c.values[c.bags[b] as usize..c.bags[b + 1] as usize]
    }

    /// All values of a feature over the row, positions concatenated, and the bag offsets into
    /// that slice (`len() + 1` entries, relative to the slice).
    pub fn bags(&self, feature: Feature) -> (&'a [i64], impl Iterator<Item = usize> + 'a) {
        let c = &self.batch.features[feature.index()];
        let (b0, b1) = (c.rows[self.row] as usize, c.rows[self.row + 1] as usize);
        let (v0, v1) = (c.bags[b0] as usize, c.bags[b1] as usize);
        let offsets = c.bags[b0..=b1].iter().map(move |&o| o as usize - v0);
        (&c.values[v0..v1], offsets)
    }

    pub fn user_id(&self) -> Option<i64> {
        self.batch.user_ids.as_ref().map(|u| u[self.row])
    }

    pub fn timestamps(&self) -> Option<&'a [i64]> {
        self.batch
            .timestamps
            .as_ref()
            .map(|(rows, values)| &values[rows[self.row] as usize..rows[self.row + 1] as usize])
    }

    pub fn text(&self) -> Option<&'a str> {
        self.batch.text.as_ref().map(|t| t.value(self.row))
    }

    pub fn task(&self) -> Option<&'a str> {
        self.batch.task.as_ref().map(|t| t.value(self.row))
    }
}

impl SequenceFile {
    /// Memory-map and check a sequence file. Fails with an error naming the file (and row and
    /// column where one is at fault) on anything that is not the reference layout.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| DataError::io(&path, e))?;
        // SAFETY: the mapping is read-only. Like every mmap-based reader we rely on the file not
        // being truncated while mapped; uqa writes files under a temporary name and renames
        // them, so files it produces are never modified in place.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(&path, e))?;
        let mmap = Arc::new(mmap);
        let (schema, blocks, decoder) = read_footer(&path, &mmap)?;
        check_schema(&path, &schema)?;
        let vocab = match schema.metadata().get(VOCAB_METADATA_KEY) {
            Some(json) => Some(
                serde_json::from_str(json).map_err(|e| DataError::BadMetadata {
                    path: path.clone(),
                    reason: format!("schema metadata `{VOCAB_METADATA_KEY}`: {e}"),
                })?,
            ),
            None => None,
        };
        let id_base = match schema.metadata().get(ID_BASE_METADATA_KEY) {
            Some(s) => s.parse().map_err(|_| DataError::BadMetadata {
                path: path.clone(),
                reason: format!(
                    "schema metadata `{ID_BASE_METADATA_KEY}` is not an integer: {s:?}"
                ),
            })?,
            None => 0,
        };

        let whole = Buffer::from(bytes::Bytes::from_owner(ArcMmap(mmap.clone())));
        let mut batches = Vec::with_capacity(blocks.len());
        let mut row_starts = vec![0];
        for (i, block) in blocks.iter().enumerate() {
            let (start, len) = block_range(&path, block, mmap.len())?;
            check_block_buffers(&path, &mmap[start..start + len], block, i)?;
            let data = whole.slice_with_length(start, len);
            let decoded =
                catch_unwind(AssertUnwindSafe(|| decoder.read_record_batch(block, &data)))
                    .map_err(|_| {
                        DataError::corrupt(&path, format!("record batch {i} is malformed"))
                    })?
                    .map_err(|e| DataError::corrupt(&path, format!("record batch {i}: {e}")))?;
            let Some(batch) = decoded else { continue };
            let first_row = *row_starts.last().unwrap_or(&0);
            let columns = batch_columns(&path, &batch, first_row, (start, len))?;
            row_starts.push(first_row + batch.num_rows());
            batches.push(columns);
            // The checks touched every offset buffer of the batch; give those pages back so
            // that opening a file costs no resident memory beyond one batch.
            release_range(&mmap, start, len);
        }
        Ok(Self {
            path,
            schema,
            mmap,
            batches,
            row_starts,
            vocab,
            id_base,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Vocabulary sizes from the file's metadata, if it was written by uqa.
    pub fn vocab(&self) -> Option<Vocab> {
        self.vocab
    }

    /// Smallest valid entity id (1 for files written by uqa, 0 assumed otherwise).
    pub fn id_base(&self) -> i64 {
        self.id_base
    }

    pub fn num_rows(&self) -> usize {
        *self.row_starts.last().unwrap_or(&0)
    }

    pub fn num_batches(&self) -> usize {
        self.batches.len()
    }

    pub fn has_text(&self) -> bool {
        self.schema.column_with_name(TEXT_COLUMN).is_some()
    }

    pub fn has_timestamps(&self) -> bool {
        self.schema.column_with_name(TIMESTAMP_COLUMN).is_some()
    }

    /// Row `index` (0-based over the whole file).
    pub fn row(&self, index: usize) -> SequenceRow<'_> {
        assert!(index < self.num_rows(), "row {index} out of range");
        let b = self.row_starts.partition_point(|&s| s <= index) - 1;
        SequenceRow {
            batch: &self.batches[b],
            row: index - self.row_starts[b],
            index,
        }
    }

    /// The rows of record batch `b`.
    pub fn batch_rows(&self, b: usize) -> impl Iterator<Item = SequenceRow<'_>> {
        let batch = &self.batches[b];
        let first = self.row_starts[b];
        (0..self.row_starts[b + 1] - first).map(move |row| SequenceRow {
            batch,
            row,
            index: first + row,
        })
    }

    pub fn rows(&self) -> impl Iterator<Item = SequenceRow<'_>> {
        (0..self.batches.len()).flat_map(|b| self.batch_rows(b))
    }

    /// Tell the kernel rows will be read in random order (training), which turns off
    /// read-ahead: each row then maps in only the pages it covers.
    pub fn advise_random(&self) {
        let _ = self.mmap.advise(memmap2::Advice::Random);
    }

    /// Drop every mapped page from this process's resident set (see
    /// [`SequenceFile::release_batch_pages`]). Random row access maps far more than it reads
    /// (the kernel maps cached neighbours of each faulting page, for each of the ~30 buffers a
    /// row spans), so a loader calls this after each batch to keep resident memory flat.
    pub fn release_pages(&self) {
        // SAFETY: as in `release_batch_pages`.
        let _ = unsafe {
            self.mmap
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, self.mmap.len())
        };
    }

    /// Drop batch `b`'s pages from this process's resident set after a streaming pass over it.
    /// The data stays valid: the next access faults the pages back in from the page cache.
    pub fn release_batch_pages(&self, b: usize) {
        let (start, len) = self.batches[b].byte_range;
        release_range(&self.mmap, start, len);
    }
}

/// Drop the pages of `start..start + len` from the resident set (see `release_batch_pages`).
fn release_range(mmap: &Mmap, start: usize, len: usize) {
    let page = 4096;
    let aligned = start / page * page;
    // SAFETY: the mapping is a read-only, file-backed shared mapping; MADV_DONTNEED on it only
    // discards this process's page-table entries and never the file's contents, so every slice
    // into it stays valid and reads the same bytes afterwards.
    let _ = unsafe {
        mmap.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            aligned,
            (len + start - aligned).min(mmap.len() - aligned),
        )
    };
}

/// `Mmap` shared with the arrays that point into it.
struct ArcMmap(Arc<Mmap>);

impl AsRef<[u8]> for ArcMmap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn read_footer(path: &Path, bytes: &[u8]) -> Result<(SchemaRef, Vec<Block>, FileDecoder)> {
    let not_arrow = |reason: &str| DataError::NotArrowFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 6 + 2 + 10 {
        return Err(not_arrow(&format!("only {} bytes long", bytes.len())));
    }
    if &bytes[..6] != MAGIC {
        if bytes.len() >= 8 && bytes[..4] == [0xff; 4] {
            return Err(not_arrow(
                "this is the Arrow IPC *stream* format; the reference layout uses the file format \
                 (pyarrow: pa.ipc.new_file)",
            ));
        }
        return Err(not_arrow("missing the ARROW1 magic at the start"));
    }
    let trailer: [u8; 10] = bytes[bytes.len() - 10..].try_into().expect("10 bytes");
    if &trailer[4..] != MAGIC {
        return Err(DataError::corrupt(
            path,
            "missing the ARROW1 magic at the end (truncated or still being written?)",
        ));
    }
    let footer_len =
        read_footer_length(trailer).map_err(|e| DataError::corrupt(path, e.to_string()))?;
    let trailer_start = bytes.len() - 10;
    if footer_len > trailer_start - 8 {
        return Err(DataError::corrupt(
            path,
            format!("footer length {footer_len} exceeds the file"),
        ));
    }
    let footer = root_as_footer(&bytes[trailer_start - footer_len..trailer_start])
        .map_err(|e| DataError::corrupt(path, format!("footer: {e}")))?;
    let fb_schema = footer
        .schema()
        .ok_or_else(|| DataError::corrupt(path, "footer has no schema"))?;
    let schema = arrow_ipc::convert::try_fb_to_schema(fb_schema)
        .map_err(|e| DataError::corrupt(path, format!("footer schema: {e}")))?;
    let schema = Arc::new(schema);
    if footer.dictionaries().is_some_and(|d| !d.is_empty()) {
        return Err(DataError::corrupt(
            path,
            "dictionary-encoded columns are not part of the reference layout",
        ));
    }
    let blocks: Vec<Block> = footer
        .recordBatches()
        .map(|b| b.iter().copied().collect())
        .unwrap_or_default();
    let decoder = FileDecoder::new(schema.clone(), footer.version());
    Ok((schema, blocks, decoder))
}

fn block_range(path: &Path, block: &Block, file_len: usize) -> Result<(usize, usize)> {
    let start = usize::try_from(block.offset()).ok();
    let len = usize::try_from(block.metaDataLength() as i64 + block.bodyLength()).ok();
    match (start, len) {
        (Some(s), Some(l))
            if block.metaDataLength() >= 0 && s.checked_add(l).is_some_and(|e| e <= file_len) =>
        {
            Ok((s, l))
        }
        _ => Err(DataError::corrupt(
            path,
            format!(
                "record batch block at offset {} with length {} lies outside the file ({file_len} bytes; truncated?)",
                block.offset(),
                block.metaDataLength() as i64 + block.bodyLength()
            ),
        )),
    }
}

/// arrow-rs slices body buffers without bounds checks of its own (it panics), so check every
/// buffer descriptor of the message against the block's body first.
fn check_block_buffers(path: &Path, data: &[u8], block: &Block, index: usize) -> Result<()> {
    let bad = |reason: String| DataError::corrupt(path, format!("record batch {index}: {reason}"));
    let meta_len = block.metaDataLength() as usize;
    if data.len() < 8 || meta_len > data.len() {
        return Err(bad("message header is truncated".into()));
    }
    // Messages start with a continuation marker (0xFFFFFFFF) and a length, or (legacy) just the
    // length.
    let skip = if data[..4] == [0xff; 4] { 8 } else { 4 };
    let message =
        root_as_message(&data[skip..meta_len]).map_err(|e| bad(format!("message header: {e}")))?;
    if message.header_type() != MessageHeader::RecordBatch {
        return Ok(());
    }
    let Some(rb) = message.header_as_record_batch() else {
        return Err(bad("message is not a record batch".into()));
    };
    if rb.compression().is_some() {
        return Err(bad(
            "compressed record batches are not supported; write the file uncompressed".into(),
        ));
    }
    let body = block.bodyLength();
    for b in rb.buffers().iter().flatten() {
        if b.offset() < 0 || b.length() < 0 || b.offset().saturating_add(b.length()) > body {
            return Err(bad(format!(
                "buffer at {} of length {} lies outside the {body}-byte body",
                b.offset(),
                b.length()
            )));
        }
    }
    Ok(())
}

fn check_schema(path: &Path, schema: &Schema) -> Result<()> {
    let expect = |name: &str, wanted: &DataType, optional: bool| -> Result<()> {
        match schema.column_with_name(name) {
            None if optional => Ok(()),
            None => Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
            }),
            Some((_, field)) if same_shape(field.data_type(), wanted) => Ok(()),
            Some((_, field)) => Err(DataError::ColumnType {
                path: path.to_path_buf(),
                column: name.to_string(),
                found: field.data_type().to_string(),
                expected: wanted.to_string(),
            }),
        }
    };
    for f in Feature::ALL {
        expect(f.column(), &feature_type(), false)?;
    }
    expect(USER_ID_COLUMN, &DataType::Int64, true)?;
    expect(TIMESTAMP_COLUMN, &timestamp_type(), true)?;
    expect(TEXT_COLUMN, &DataType::Utf8, true)?;
    expect(TASK_COLUMN, &DataType::Utf8, true)?;
    Ok(())
}

/// Type equality that ignores list child names and nullability (writers differ on both).
fn same_shape(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y)) => same_shape(x.data_type(), y.data_type()),
        _ => a == b,
    }
}

fn batch_columns(
    path: &Path,
    batch: &RecordBatch,
    first_row: usize,
    byte_range: (usize, usize),
) -> Result<BatchColumns> {
    let null_error = |column: &str, array: &dyn Array| {
        let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
        DataError::NullValue {
            path: path.to_path_buf(),
            row: first_row + row,
            column: column.to_string(),
        }
    };
    let column = |name: &str| batch.column_by_name(name).cloned();
    let list = |name: &str| -> Result<ListArray> {
        let array = column(name).expect("schema checked");
        let list = array
            .as_any()
            .downcast_ref::<ListArray>()
            .expect("schema checked")
            .clone();
        if list.null_count() > 0 {
            return Err(null_error(name, &list));
        }
        Ok(list)
    };

    let mut features = Vec::with_capacity(10);
    for f in Feature::ALL {
        let outer = list(f.column())?;
        let inner = outer
            .values()
            .as_any()
            .downcast_ref::<ListArray>()
            .expect("schema checked");
        let values = inner
            .values()
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("schema checked");
        if inner.null_count() > 0 || values.null_count() > 0 {
            let row = first_null_row(&outer, inner);
            return Err(DataError::NullValue {
                path: path.to_path_buf(),
                row: first_row + row,
                column: f.column().to_string(),
            });
        }
        let col = NestedColumn {
            rows: outer.offsets().inner().clone(),
            bags: inner.offsets().inner().clone(),
            values: values.values().clone(),
        };
        if f.is_single_id() {
            check_single_ids(path, &col, f, first_row)?;
        }
        features.push(col);
    }
    let rows = batch.num_rows();
    let reference = &features[0];
    for (k, f) in Feature::ALL.iter().enumerate().skip(1) {
        for r in 0..rows {
            let (expected, found) = (reference.row_len(r), features[k].row_len(r));
            if expected != found {
                return Err(DataError::RaggedRow {
                    path: path.to_path_buf(),
                    row: first_row + r,
                    column: f.column().to_string(),
                    found,
                    reference: Feature::ItemId.column().to_string(),
                    expected,
                });
            }
        }
    }

    let user_ids = match column(USER_ID_COLUMN) {
        Some(a) => {
            let ids = a
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("schema checked");
            if ids.null_count() > 0 {
                return Err(null_error(USER_ID_COLUMN, ids));
            }
            Some(ids.values().clone())
        }
        None => None,
    };
    let timestamps = match schema_has(batch, TIMESTAMP_COLUMN) {
        true => {
            let ts = list(TIMESTAMP_COLUMN)?;
            let values = ts
                .values()
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("schema checked");
            for r in 0..rows {
                let len = (ts.offsets()[r + 1] - ts.offsets()[r]) as usize;
                if len != reference.row_len(r) {
                    return Err(DataError::RaggedRow {
                        path: path.to_path_buf(),
                        row: first_row + r,
                        column: TIMESTAMP_COLUMN.to_string(),
                        found: len,
                        reference: Feature::ItemId.column().to_string(),
                        expected: reference.row_len(r),
                    });
                }
            }
            Some((ts.offsets().inner().clone(), values.values().clone()))
        }
        false => None,
    };
    let strings = |name: &str| -> Result<Option<StringArray>> {
        match column(name) {
            Some(a) => {
                let s = a
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("schema checked")
                    .clone();
                if s.null_count() > 0 {
                    return Err(null_error(name, &s));
                }
                Ok(Some(s))
            }
            None => Ok(None),
        }
    };
    Ok(BatchColumns {
        features,
        user_ids,
        timestamps,
        text: strings(TEXT_COLUMN)?,
        task: strings(TASK_COLUMN)?,
        byte_range,
    })
}

fn schema_has(batch: &RecordBatch, name: &str) -> bool {
    batch.schema().column_with_name(name).is_some()
}

fn first_null_row(outer: &ListArray, inner: &ListArray) -> usize {
    let values = inner.values();
    let bad_bag = (0..inner.len()).find(|&b| {
        inner.is_null(b)
            || (inner.offsets()[b]..inner.offsets()[b + 1]).any(|v| values.is_null(v as usize))
    });
    match bad_bag {
        Some(b) => outer.offsets().partition_point(|&o| o as usize <= b) - 1,
        None => 0,
    }
}

fn check_single_ids(path: &Path, c: &NestedColumn, f: Feature, first_row: usize) -> Result<()> {
    if c.bags.windows(2).all(|w| w[1] - w[0] == 1) {
        return Ok(());
    }
    let bag = c
        .bags
        .windows(2)
        .position(|w| w[1] - w[0] != 1)
        .unwrap_or(0);
    let row = c.rows.partition_point(|&o| o as usize <= bag) - 1;
    Err(DataError::BagSize {
        path: path.to_path_buf(),
        row: first_row + row,
        position: bag - c.rows[row] as usize,
        column: f.column().to_string(),
        found: (c.bags[bag + 1] - c.bags[bag]) as usize,
    })
}
