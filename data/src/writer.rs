//! Writing sequence files in the reference layout. Rows are assembled column by column in a
//! [`SequenceBatchBuilder`] (flat offset and value vectors, no per-bag allocation) and appended to
//! an Arrow IPC *file* that only appears under its final name once [`SequenceWriter::finish`]
//! has fsynced it.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch, StringArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::atomic::AtomicFile;
use crate::error::{DataError, Result};
use crate::schema::{Columns, Feature, Vocab, sequence_schema};

/// A `list<list<int64>>` column under construction.
#[derive(Debug, Clone)]
struct NestedColumn {
    rows: Vec<i32>,
    bags: Vec<i32>,
    values: Vec<i64>,
}

impl NestedColumn {
    fn new() -> Self {
        Self {
            rows: vec![0],
            bags: vec![0],
            values: Vec::new(),
        }
    }

    fn push_bag(&mut self, ids: &[i64]) {
        self.values.extend_from_slice(ids);
        self.bags.push(self.values.len() as i32);
    }

    fn end_row(&mut self) {
        self.rows.push((self.bags.len() - 1) as i32);
    }

    fn finish(self) -> ArrayRef {
        let inner = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Int64, true)),
            OffsetBuffer::new(ScalarBuffer::from(self.bags)),
            Arc::new(Int64Array::from(self.values)),
            None,
        );
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(inner.data_type().clone(), true)),
            OffsetBuffer::new(ScalarBuffer::from(self.rows)),
            Arc::new(inner),
            None,
        ))
    }
}

/// One position of a user's sequence: the five entity ids and the five token bags.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// Item, category, brand, shop, seller ids (the order of [`Feature::IDS`]).
    pub ids: [i64; 5],
    /// Title, category, shop, brand, seller token bags (the order of [`Feature::TEXTS`]).
    pub bags: [&'a [i64]; 5],
    pub timestamp: i64,
}

/// Rows of a sequence file, built position by position.
#[derive(Debug, Clone)]
pub struct SequenceBatchBuilder {
    schema: SchemaRef,
    columns: Columns,
    user_ids: Vec<i64>,
    features: Vec<NestedColumn>,
    timestamp_rows: Vec<i32>,
    timestamps: Vec<i64>,
    texts: Vec<String>,
    tasks: Vec<String>,
    open_row: bool,
}

impl SequenceBatchBuilder {
    pub fn new(schema: SchemaRef, columns: Columns) -> Self {
        Self {
            schema,
            columns,
            user_ids: Vec::new(),
            features: vec![NestedColumn::new(); Feature::ALL.len()],
            timestamp_rows: vec![0],
            timestamps: Vec::new(),
            texts: Vec::new(),
            tasks: Vec::new(),
            open_row: false,
        }
    }

    pub fn rows(&self) -> usize {
        self.user_ids.len()
    }

    pub fn positions(&self) -> usize {
        self.timestamps.len()
    }

    pub fn begin_row(&mut self, user_id: i64) {
        debug_assert!(!self.open_row, "begin_row while a row is open");
        self.user_ids.push(user_id);
        self.open_row = true;
    }

    pub fn push_position(&mut self, p: &Position<'_>) {
        debug_assert!(self.open_row, "push_position outside a row");
        for (k, id) in p.ids.iter().enumerate() {
            self.features[k].push_bag(std::slice::from_ref(id));
        }
        for (k, bag) in p.bags.iter().enumerate() {
            self.features[5 + k].push_bag(bag);
        }
        self.timestamps.push(p.timestamp);
    }

    /// Close the row; `text` and `task` are stored only when the file has those columns.
    pub fn end_row(&mut self, text: Option<&str>, task: Option<&str>) {
        for c in &mut self.features {
            c.end_row();
        }
        self.timestamp_rows.push(self.timestamps.len() as i32);
        if self.columns.text {
            self.texts.push(text.unwrap_or_default().to_string());
        }
        if self.columns.task {
            self.tasks.push(task.unwrap_or_default().to_string());
        }
        self.open_row = false;
    }

    /// Turn the rows into a record batch and reset the builder.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let fresh = Self::new(self.schema.clone(), self.columns);
        let built = std::mem::replace(self, fresh);
        let mut arrays: Vec<ArrayRef> = Vec::new();
        if built.columns.user_id {
            arrays.push(Arc::new(Int64Array::from(built.user_ids)));
        }
        for c in built.features {
            arrays.push(c.finish());
        }
        if built.columns.timestamps {
            arrays.push(Arc::new(ListArray::new(
                Arc::new(Field::new_list_field(DataType::Int64, true)),
                OffsetBuffer::new(ScalarBuffer::from(built.timestamp_rows)),
                Arc::new(Int64Array::from(built.timestamps)),
                None,
            )));
        }
        if built.columns.text {
            arrays.push(Arc::new(StringArray::from(built.texts)));
        }
        if built.columns.task {
            arrays.push(Arc::new(StringArray::from(built.tasks)));
        }
        RecordBatch::try_new(built.schema, arrays)
            .map_err(|e| DataError::Invalid(format!("building a record batch: {e}")))
    }
}

/// An Arrow IPC file of user sequences, written atomically.
pub struct SequenceWriter {
    writer: FileWriter<AtomicFile>,
    schema: SchemaRef,
    columns: Columns,
    rows: usize,
}

impl SequenceWriter {
    pub fn create(path: &Path, columns: Columns, vocab: &Vocab, id_base: i64) -> Result<Self> {
        let schema = Arc::new(sequence_schema(columns, vocab, id_base));
        Self::with_schema(path, schema, columns)
    }

    fn with_schema(path: &Path, schema: SchemaRef, columns: Columns) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        let writer = FileWriter::try_new(file, &schema)
            .map_err(|e| DataError::corrupt(path, format!("writing the header: {e}")))?;
        Ok(Self {
            writer,
            schema,
            columns,
            rows: 0,
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// A builder whose batches this writer accepts.
    pub fn builder(&self) -> SequenceBatchBuilder {
        SequenceBatchBuilder::new(self.schema.clone(), self.columns)
    }

    pub fn rows_written(&self) -> usize {
        self.rows
    }

    /// Append the builder's rows (if any) as one record batch and reset the builder.
    pub fn write(&mut self, builder: &mut SequenceBatchBuilder) -> Result<()> {
        if builder.rows() == 0 {
            return Ok(());
        }
        let batch = builder.finish()?;
        self.rows += batch.num_rows();
        let path = self.writer.get_ref().path().to_path_buf();
        self.writer
            .write(&batch)
            .map_err(|e| DataError::corrupt(&path, format!("writing a record batch: {e}")))
    }

    /// Write the footer, fsync, and publish the file under its final name.
    pub fn finish(mut self) -> Result<()> {
        let path = self.writer.get_ref().path().to_path_buf();
        self.writer
            .finish()
            .map_err(|e| DataError::corrupt(&path, format!("writing the footer: {e}")))?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| DataError::corrupt(&path, format!("closing: {e}")))?;
        file.commit()
    }
}
