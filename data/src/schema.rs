//! The reference file layout (REFERENCE.md section 2): ten `list<list<int64>>` feature columns,
//! one row per user, positions oldest first, each position a bag of ids. Also the optional
//! columns uqa adds (`user_id`, `uni_seq_timestamp`, `text`, `task`), which pyarrow and the
//! reference loader simply ignore.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

/// The ten per-position features, in the reference's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    ItemId,
    CateId,
    BrandId,
    ShopId,
    SellerId,
    TitleTokens,
    CateTokens,
    ShopTokens,
    BrandTokens,
    SellerTokens,
}

/// The id space a feature draws from; the five text features share the LLM's token table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VocabKind {
    Items,
    Cates,
    Brands,
    Shops,
    Sellers,
    Tokens,
}

impl Feature {
    pub const ALL: [Feature; 10] = [
        Feature::ItemId,
        Feature::CateId,
        Feature::BrandId,
        Feature::ShopId,
        Feature::SellerId,
        Feature::TitleTokens,
        Feature::CateTokens,
        Feature::ShopTokens,
        Feature::BrandTokens,
        Feature::SellerTokens,
    ];
    /// The five single-id features (`w/o Text` keeps exactly these).
    pub const IDS: [Feature; 5] = [
        Feature::ItemId,
        Feature::CateId,
        Feature::BrandId,
        Feature::ShopId,
        Feature::SellerId,
    ];
    /// The five text-token bags.
    pub const TEXTS: [Feature; 5] = [
        Feature::TitleTokens,
        Feature::CateTokens,
        Feature::ShopTokens,
        Feature::BrandTokens,
        Feature::SellerTokens,
    ];

    pub fn column(self) -> &'static str {
        match self {
            Feature::ItemId => "uni_seq_item_id",
            Feature::CateId => "uni_seq_cate_id",
            Feature::BrandId => "uni_seq_brand_id",
            Feature::ShopId => "uni_seq_shop_id",
            Feature::SellerId => "uni_seq_seller_id",
            Feature::TitleTokens => "uni_seq_title_bpe_token_ids",
            Feature::CateTokens => "uni_seq_cate_bpe_token_ids",
            Feature::ShopTokens => "uni_seq_shop_bpe_token_ids",
            Feature::BrandTokens => "uni_seq_brand_bpe_token_ids",
            Feature::SellerTokens => "uni_seq_seller_bpe_token_ids",
        }
    }

    pub fn vocab(self) -> VocabKind {
        match self {
            Feature::ItemId => VocabKind::Items,
            Feature::CateId => VocabKind::Cates,
            Feature::BrandId => VocabKind::Brands,
            Feature::ShopId => VocabKind::Shops,
            Feature::SellerId => VocabKind::Sellers,
            _ => VocabKind::Tokens,
        }
    }

    /// Id features hold exactly one id per position; text features hold a bag (possibly empty).
    pub fn is_single_id(self) -> bool {
        self.vocab() != VocabKind::Tokens
    }

    pub fn index(self) -> usize {
        Feature::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// Vocabulary sizes, one per id space. Ids of the five entity spaces run from 1 to size - 1
/// (0 is reserved for padding, as in RecBole and SASRec); token ids run from 0 to size - 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vocab {
    pub items: u64,
    pub cates: u64,
    pub brands: u64,
    pub shops: u64,
    pub sellers: u64,
    pub tokens: u64,
}

impl Vocab {
    /// The reference dataset's sizes (REFERENCE.md section 2). Used to check files that carry no
    /// uqa metadata, such as files written by other tools. The reference does not say whether its
    /// ids start at 0 or 1, so a file without metadata is checked against `[0, size)`.
    pub const REFERENCE: Vocab = Vocab {
        items: 994_447,
        cates: 9_330,
        brands: 149_750,
        shops: 268_446,
        sellers: 268_446,
        tokens: 151_936,
    };

    pub fn size(&self, kind: VocabKind) -> u64 {
        match kind {
            VocabKind::Items => self.items,
            VocabKind::Cates => self.cates,
            VocabKind::Brands => self.brands,
            VocabKind::Shops => self.shops,
            VocabKind::Sellers => self.sellers,
            VocabKind::Tokens => self.tokens,
        }
    }
}

pub const USER_ID_COLUMN: &str = "user_id";
pub const TIMESTAMP_COLUMN: &str = "uni_seq_timestamp";
pub const TEXT_COLUMN: &str = "text";
pub const TASK_COLUMN: &str = "task";

/// Schema-metadata key under which uqa stores the file's vocabulary sizes (JSON of [`Vocab`]).
pub const VOCAB_METADATA_KEY: &str = "uqa.vocab";
/// Schema-metadata key for the id base (`0` or `1`): the smallest valid entity id.
pub const ID_BASE_METADATA_KEY: &str = "uqa.id_base";

/// The Arrow type of every feature column: `list<list<int64>>`, with pyarrow's default child
/// names and nullability, so that files we write compare equal to pyarrow's schema.
pub fn feature_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
        true,
    )))
}

/// `list<int64>`: the per-position timestamp column.
pub fn timestamp_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
}

/// Which optional columns a sequence file carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns {
    pub user_id: bool,
    pub timestamps: bool,
    pub text: bool,
    pub task: bool,
}

/// The schema of a sequence file: optional `user_id`, the ten features, optional timestamps,
/// optional chat `text` and `task`. Vocabulary sizes travel in the schema metadata.
pub fn sequence_schema(columns: Columns, vocab: &Vocab, id_base: i64) -> Schema {
    let mut fields = Vec::new();
    if columns.user_id {
        fields.push(Field::new(USER_ID_COLUMN, DataType::Int64, true));
    }
    for f in Feature::ALL {
        fields.push(Field::new(f.column(), feature_type(), true));
    }
    if columns.timestamps {
        fields.push(Field::new(TIMESTAMP_COLUMN, timestamp_type(), true));
    }
    if columns.text {
        fields.push(Field::new(TEXT_COLUMN, DataType::Utf8, true));
    }
    if columns.task {
        fields.push(Field::new(TASK_COLUMN, DataType::Utf8, true));
    }
    let metadata = HashMap::from([
        (
            VOCAB_METADATA_KEY.to_string(),
            serde_json::to_string(vocab).unwrap_or_default(),
        ),
        (ID_BASE_METADATA_KEY.to_string(), id_base.to_string()),
    ]);
    Schema::new(fields).with_metadata(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_order_matches_reference() {
        let names: Vec<_> = Feature::ALL.iter().map(|f| f.column()).collect();
        assert_eq!(names[0], "uni_seq_item_id");
        assert_eq!(names[5], "uni_seq_title_bpe_token_ids");
        assert_eq!(names[9], "uni_seq_seller_bpe_token_ids");
        assert_eq!(Feature::IDS.len() + Feature::TEXTS.len(), 10);
        assert!(Feature::IDS.iter().all(|f| f.is_single_id()));
        assert!(Feature::TEXTS.iter().all(|f| !f.is_single_id()));
    }

    #[test]
    fn schema_carries_vocab_metadata() {
        let s = sequence_schema(Columns::default(), &Vocab::REFERENCE, 1);
        let v: Vocab = serde_json::from_str(&s.metadata[VOCAB_METADATA_KEY]).unwrap();
        assert_eq!(v, Vocab::REFERENCE);
        assert_eq!(s.fields().len(), 10);
    }
}
