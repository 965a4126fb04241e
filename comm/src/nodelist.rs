//! Slurm's compressed host lists (`n[1-3,5]`, `gpu[01-02]-ib,login1`) and task-count lists
//! (`2(x3),1`), expanded into plain vectors. Only the launch contract needs these: the first host
//! of the job's node list is the rendezvous master when nothing else says so.

use crate::error::{CommError, Result};

/// Upper bound on an expanded list: a typo like `n[1-99999999]` must be an error, not an OOM.
const MAX_HOSTS: usize = 1 << 20;

/// Expands a Slurm host list such as `n[1-3,5],login[01-02]` into
/// `["n1","n2","n3","n5","login01","login02"]`. Zero padding of range bounds is kept, and several
/// bracket groups in one name (`r[1-2]n[1-2]`) expand to their cartesian product.
pub fn expand_nodelist(list: &str) -> Result<Vec<String>> {
    let bad = |reason: &str| CommError::EnvVar {
        var: "SLURM_JOB_NODELIST",
        value: list.to_string(),
        reason: reason.to_string(),
    };
    let mut hosts = Vec::new();
    for item in split_top_level(list).map_err(|e| bad(&e))? {
        if item.is_empty() {
            return Err(bad("empty host name"));
        }
        expand_one(item, &mut hosts).map_err(|e| bad(&e))?;
    }
    if hosts.is_empty() {
        return Err(bad("no hosts"));
    }
    Ok(hosts)
}

/// Splits on commas that are not inside brackets.
fn split_top_level(list: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ']'".into());
                }
            }
            ',' if depth == 0 => {
                out.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '['".into());
    }
    out.push(list[start..].trim());
    Ok(out)
}

/// Expands the first bracket group of `name` and recurses on the rest.
fn expand_one(name: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = name.find('[') else {
        if name.contains(']') {
            return Err("unbalanced ']'".into());
        }
        push_host(out, name.to_string())?;
        return Ok(());
    };
    let close = name[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or("unbalanced '['")?;
    let (prefix, body, suffix) = (&name[..open], &name[open + 1..close], &name[close + 1..]);
    for part in body.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (part, part),
        };
        let width = lo.len();
        let lo_n: u64 = lo.parse().map_err(|_| format!("bad range bound {lo:?}"))?;
        let hi_n: u64 = hi.parse().map_err(|_| format!("bad range bound {hi:?}"))?;
        if hi_n < lo_n {
            return Err(format!("descending range {part:?}"));
        }
        if hi_n - lo_n >= MAX_HOSTS as u64 {
            return Err(format!("range {part:?} is larger than {MAX_HOSTS} hosts"));
        }
        for n in lo_n..=hi_n {
            expand_one(&format!("{prefix}{n:0width$}{suffix}"), out)?;
        }
    }
    Ok(())
}

fn push_host(out: &mut Vec<String>, host: String) -> Result<(), String> {
    if out.len() >= MAX_HOSTS {
        return Err(format!("more than {MAX_HOSTS} hosts"));
    }
    out.push(host);
    Ok(())
}

/// Expands `SLURM_TASKS_PER_NODE` (`2(x3),1` means 2,2,2,1) into one count per node.
pub fn expand_tasks_per_node(value: &str) -> Result<Vec<usize>> {
    let bad = |reason: String| CommError::EnvVar {
        var: "SLURM_TASKS_PER_NODE",
        value: value.to_string(),
        reason,
    };
    let mut counts = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        let (count, repeat) = match item.split_once("(x") {
            Some((c, rest)) => {
                let r = rest
                    .strip_suffix(')')
                    .ok_or_else(|| bad(format!("missing ')' in {item:?}")))?;
                (c, r)
            }
            None => (item, "1"),
        };
        let count: usize = count
            .parse()
            .map_err(|_| bad(format!("bad task count {count:?}")))?;
        let repeat: usize = repeat
            .parse()
            .map_err(|_| bad(format!("bad repeat {repeat:?}")))?;
        if counts.len() + repeat > MAX_HOSTS {
            return Err(bad(format!("more than {MAX_HOSTS} nodes")));
        }
        counts.extend(std::iter::repeat_n(count, repeat));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_ranges_lists_and_padding() {
        assert_eq!(
            expand_nodelist("n[1-3,5]").unwrap(),
            ["n1", "n2", "n3", "n5"]
        );
        assert_eq!(
            expand_nodelist("gpu[08-10],login1").unwrap(),
            ["gpu08", "gpu09", "gpu10", "login1"]
        );
        assert_eq!(expand_nodelist("single").unwrap(), ["single"]);
        assert_eq!(
            expand_nodelist("r[1-2]n[1-2]").unwrap(),
            ["r1n1", "r1n2", "r2n1", "r2n2"]
        );
    }

    #[test]
    fn rejects_malformed_lists_with_the_value() {
        for bad in ["n[1-3", "n1-3]", "n[3-1]", "n[a-b]", "", "n[1-99999999]"] {
            let err = expand_nodelist(bad).unwrap_err().to_string();
            assert!(err.contains("SLURM_JOB_NODELIST"), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn expands_tasks_per_node() {
        assert_eq!(expand_tasks_per_node("2(x3),1").unwrap(), [2, 2, 2, 1]);
        assert_eq!(expand_tasks_per_node("4").unwrap(), [4]);
        assert!(expand_tasks_per_node("2(x3").is_err());
        assert!(expand_tasks_per_node("x").is_err());
    }
}
