//! The item catalog: for every item its category, brand, shop and seller, and the words behind
//! each (title, category / brand / shop / seller names) with their token ids. Questions and text
//! prompts need the words; sequence files need the ids. In memory each text lives once per
//! entity; on disk (`item_catalog.arrow`) the table is one row per item, denormalised, so that
//! pyarrow users can read it without joins.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch, StringArray};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};

use crate::atomic::AtomicFile;
use crate::error::{DataError, Result};
use crate::writer::Position;

/// Texts of one id space, indexed by id (index 0 is the padding entity, with empty text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextTable {
    pub texts: Vec<String>,
    tokens: Vec<i64>,
    offsets: Vec<u32>,
}

impl TextTable {
    pub fn new() -> Self {
        Self {
            texts: Vec::new(),
            tokens: Vec::new(),
            offsets: vec![0],
        }
    }

    pub fn push(&mut self, text: String, tokens: &[i64]) {
        self.texts.push(text);
        self.tokens.extend_from_slice(tokens);
        self.offsets.push(self.tokens.len() as u32);
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    pub fn text(&self, id: usize) -> &str {
        &self.texts[id]
    }

    pub fn tokens(&self, id: usize) -> &[i64] {
        &self.tokens[self.offsets[id] as usize..self.offsets[id + 1] as usize]
    }
}

/// Entity ids of one item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemAttrs {
    pub cate: u32,
    pub brand: u32,
    pub shop: u32,
    pub seller: u32,
}

/// The catalog. Item ids index `items` and `titles` directly; entity ids index their tables.
/// Row 0 of every table is the padding entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemCatalog {
    pub items: Vec<ItemAttrs>,
    pub titles: TextTable,
    pub cates: TextTable,
    pub brands: TextTable,
    pub shops: TextTable,
    pub sellers: TextTable,
}

const COLUMNS: [&str; 15] = [
    "item_id",
    "cate_id",
    "brand_id",
    "shop_id",
    "seller_id",
    "title",
    "cate_name",
    "brand_name",
    "shop_name",
    "seller_name",
    "title_token_ids",
    "cate_token_ids",
    "brand_token_ids",
    "shop_token_ids",
    "seller_token_ids",
];

impl ItemCatalog {
    /// An empty catalog holding only the padding row of every table.
    pub fn with_padding() -> Self {
        let mut c = Self {
            items: vec![ItemAttrs::default()],
            titles: TextTable::new(),
            cates: TextTable::new(),
            brands: TextTable::new(),
            shops: TextTable::new(),
            sellers: TextTable::new(),
        };
        for t in c.tables_mut() {
            t.push(String::new(), &[]);
        }
        c
    }

    fn tables_mut(&mut self) -> [&mut TextTable; 5] {
        [
            &mut self.titles,
            &mut self.cates,
            &mut self.brands,
            &mut self.shops,
            &mut self.sellers,
        ]
    }

    /// Number of real items (without the padding row).
    pub fn num_items(&self) -> usize {
        self.items.len() - 1
    }

    pub fn attrs(&self, item: u32) -> ItemAttrs {
        self.items[item as usize]
    }

    /// The ten features of one click on `item`.
    pub fn position(&self, item: u32, timestamp: i64) -> Position<'_> {
        let a = self.items[item as usize];
        Position {
            ids: [
                item as i64,
                a.cate as i64,
                a.brand as i64,
                a.shop as i64,
                a.seller as i64,
            ],
            // Reference column order: title, cate, shop, brand, seller.
            bags: [
                self.titles.tokens(item as usize),
                self.cates.tokens(a.cate as usize),
                self.shops.tokens(a.shop as usize),
                self.brands.tokens(a.brand as usize),
                self.sellers.tokens(a.seller as usize),
            ],
            timestamp,
        }
    }

    fn schema() -> Schema {
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)));
        let fields: Vec<Field> = COLUMNS
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let ty = match k {
                    0..=4 => DataType::Int64,
                    5..=9 => DataType::Utf8,
                    _ => list.clone(),
                };
                Field::new(*name, ty, false)
            })
            .collect();
        Schema::new(fields)
    }

    /// Write `item_catalog.arrow` (one row per real item) atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let schema = Arc::new(Self::schema());
        let file = AtomicFile::create(path)?;
        let arrow_err = |e: arrow_schema::ArrowError| DataError::corrupt(path, e.to_string());
        let mut writer = FileWriter::try_new(file, &schema).map_err(arrow_err)?;
        const CHUNK: usize = 65_536;
        let n = self.num_items();
        let mut start = 1;
        while start <= n {
            let end = (start + CHUNK).min(n + 1);
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(15);
            let ids: [Box<dyn Fn(usize) -> i64>; 5] = [
                Box::new(|i| i as i64),
                Box::new(|i| self.items[i].cate as i64),
                Box::new(|i| self.items[i].brand as i64),
                Box::new(|i| self.items[i].shop as i64),
                Box::new(|i| self.items[i].seller as i64),
            ];
            for f in &ids {
                cols.push(Arc::new(Int64Array::from_iter_values((start..end).map(f))));
            }
            let text_of = |k: usize, i: usize| -> (&str, &[i64]) {
                let a = self.items[i];
                let (table, id) = match k {
                    0 => (&self.titles, i),
                    1 => (&self.cates, a.cate as usize),
                    2 => (&self.brands, a.brand as usize),
                    3 => (&self.shops, a.shop as usize),
                    _ => (&self.sellers, a.seller as usize),
                };
                (table.text(id), table.tokens(id))
            };
            for k in 0..5 {
                let mut b = StringBuilder::new();
                for i in start..end {
                    b.append_value(text_of(k, i).0);
                }
                cols.push(Arc::new(b.finish()));
            }
            for k in 0..5 {
                let mut b = ListBuilder::new(Int64Builder::new())
                    .with_field(Arc::new(Field::new_list_field(DataType::Int64, true)));
                for i in start..end {
                    b.values().append_slice(text_of(k, i).1);
                    b.append(true);
                }
                cols.push(Arc::new(b.finish()));
            }
            let batch = RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err)?;
            writer.write(&batch).map_err(arrow_err)?;
            start = end;
        }
        writer.finish().map_err(arrow_err)?;
        writer.into_inner().map_err(arrow_err)?.commit()
    }

    /// Whether the Arrow file at `path` is an item catalog (its schema has `item_id` and no
    /// sequence column), so tools taking any dataset file can tell the two kinds apart.
    pub fn is_catalog_file(path: &Path) -> Result<bool> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let reader = FileReader::try_new(std::io::BufReader::new(file), None)
            .map_err(|e| DataError::corrupt(path, e.to_string()))?;
        let schema = reader.schema();
        Ok(schema.column_with_name("item_id").is_some()
            && schema.column_with_name("uni_seq_item_id").is_none())
    }

    /// Read `item_catalog.arrow`. Items must be numbered 1..=n in order; entity texts are taken
    /// from the first item that names each entity.
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let reader = FileReader::try_new(std::io::BufReader::new(file), None)
            .map_err(|e| DataError::corrupt(path, e.to_string()))?;
        let schema = reader.schema();
        for name in COLUMNS {
            if schema.column_with_name(name).is_none() {
                return Err(DataError::MissingColumn {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                });
            }
        }
        let mut c = Self::with_padding();
        let mut entity_rows: [Vec<Option<EntityText>>; 4] = Default::default();
        let mut row = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| DataError::corrupt(path, e.to_string()))?;
            let col = |name: &str| batch.column_by_name(name).expect("checked").clone();
            let int = |name: &str| -> Result<Int64Array> {
                col(name)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .cloned()
                    .ok_or_else(|| type_error(path, name, "int64"))
            };
            let string = |name: &str| -> Result<StringArray> {
                col(name)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| type_error(path, name, "utf8"))
            };
            let list = |name: &str| -> Result<ListArray> {
                col(name)
                    .as_any()
                    .downcast_ref::<ListArray>()
                    .cloned()
                    .ok_or_else(|| type_error(path, name, "list<int64>"))
            };
            let ids: Vec<Int64Array> =
                COLUMNS[..5].iter().map(|n| int(n)).collect::<Result<_>>()?;
            let texts: Vec<StringArray> = COLUMNS[5..10]
                .iter()
                .map(|n| string(n))
                .collect::<Result<_>>()?;
            let tokens: Vec<ListArray> = COLUMNS[10..]
                .iter()
                .map(|n| list(n))
                .collect::<Result<_>>()?;
            for r in 0..batch.num_rows() {
                row += 1;
                let bad = |reason: String| DataError::BadRow {
                    path: path.to_path_buf(),
                    row: row - 1,
                    reason,
                };
                if ids[0].value(r) != row as i64 {
                    return Err(bad(format!(
                        "item_id is {}, expected {row} (items must be numbered 1..n in order)",
                        ids[0].value(r)
                    )));
                }
                let token_list = |k: usize| -> Vec<i64> {
                    let v = tokens[k].value(r);
                    v.as_any()
                        .downcast_ref::<Int64Array>()
                        .map(|a| a.values().to_vec())
                        .unwrap_or_default()
                };
                let mut attrs = [0u32; 4];
                for k in 0..4 {
                    let id = ids[k + 1].value(r);
                    if id <= 0 || id > u32::MAX as i64 {
                        return Err(bad(format!("{} {id} is not a positive id", COLUMNS[k + 1])));
                    }
                    attrs[k] = id as u32;
                    let table = &mut entity_rows[k];
                    if table.len() <= id as usize {
                        table.resize(id as usize + 1, None);
                    }
                    if table[id as usize].is_none() {
                        table[id as usize] =
                            Some((texts[k + 1].value(r).to_string(), token_list(k + 1)));
                    }
                }
                c.items.push(ItemAttrs {
                    cate: attrs[0],
                    brand: attrs[1],
                    shop: attrs[2],
                    seller: attrs[3],
                });
                c.titles.push(texts[0].value(r).to_string(), &token_list(0));
            }
        }
        let [cates, brands, shops, sellers] = entity_rows;
        for (table, rows) in [
            (&mut c.cates, cates),
            (&mut c.brands, brands),
            (&mut c.shops, shops),
            (&mut c.sellers, sellers),
        ] {
            for entry in rows.into_iter().skip(1) {
                let (text, tokens) = entry.unwrap_or_default();
                table.push(text, &tokens);
            }
        }
        Ok(c)
    }
}

/// An entity's name and its token ids, as first seen while reading the catalog.
type EntityText = (String, Vec<i64>);

fn type_error(path: &Path, column: &str, expected: &str) -> DataError {
    DataError::ColumnType {
        path: path.to_path_buf(),
        column: column.to_string(),
        found: "another type".to_string(),
        expected: expected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> ItemCatalog {
        let mut c = ItemCatalog::with_padding();
        c.cates.push("phone".into(), &[10]);
        c.brands.push("Kavo".into(), &[11]);
        c.brands.push("Lumi".into(), &[12]);
        c.shops.push("Kavo Store".into(), &[11, 13]);
        c.shops.push("Lumi Store".into(), &[12, 13]);
        c.sellers.push("Ana".into(), &[14]);
        c.sellers.push("Bo".into(), &[15]);
        for (brand, shop) in [(1, 1), (2, 2), (1, 1)] {
            c.items.push(ItemAttrs {
                cate: 1,
                brand,
                shop,
                seller: shop,
            });
            let n = c.items.len() as i64 - 1;
            c.titles.push(format!("title {n}"), &[20, n]);
        }
        c
    }

    #[test]
    fn write_then_read_is_identity() {
        let c = sample();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("item_catalog.arrow");
        c.write(&p).unwrap();
        assert_eq!(ItemCatalog::read(&p).unwrap(), c);
    }

    #[test]
    fn position_follows_reference_column_order() {
        let c = sample();
        let p = c.position(2, 99);
        assert_eq!(p.ids, [2, 1, 2, 2, 2]);
        assert_eq!(p.bags[0], &[20, 2]);
        assert_eq!(p.bags[2], &[12, 13]); // shop before brand, as in the reference
        assert_eq!(p.bags[3], &[12]);
    }
}
