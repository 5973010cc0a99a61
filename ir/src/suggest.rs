//! "Did you mean …?": the closest known name to a misspelled one.

/// The candidate closest to `name` by edit distance, if it is close enough to be a
/// plausible typo (a third of the name's length, at least one edit; case differences
/// count as half an edit so `dataset` finds `Dataset`).
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let len = name.chars().count();
    // Never suggest a name that shares nothing with the one written.
    let limit = (len.div_ceil(3).max(1) * 2).min((len * 2).saturating_sub(1));
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

/// Edit distance (with transpositions) in half-edits: a change of case alone
/// costs 1, any other edit 2.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 8 {
        return usize::MAX;
    }
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).map(|j| j * 2).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i * 2;
        for j in 1..=b.len() {
            let sub = if a[i - 1] == b[j - 1] {
                0
            } else if a[i - 1].eq_ignore_ascii_case(&b[j - 1]) {
                1
            } else {
                2
            };
            cur[j] = (prev[j - 1] + sub).min(prev[j] + 2).min(cur[j - 1] + 2);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(before[j - 2] + 2);
            }
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `help: did you mean `x`?` text, if there is a close candidate.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_and_case() {
        assert_eq!(closest("Trian", ["Train", "Evaluate"]), Some("Train"));
        assert_eq!(closest("dataset", ["Dataset", "Model"]), Some("Dataset"));
        assert_eq!(closest("xyz", ["Train", "Evaluate"]), None);
        assert_eq!(closest("Train", ["Train"]), None);
        assert_eq!(closest("stagee", ["stage", "model"]), Some("stage"));
        assert_eq!(closest("a", ["b", "c"]), None);
    }
}
