//! Text helpers every layer uses.

/// Cuts `text` to at most `budget` characters keeping its head and its tail
/// (a quarter and three quarters): the end of a test log holds the summary.
pub fn cut_middle(text: &str, budget: usize) -> String {
    let n = text.chars().count();
    if n <= budget {
        return text.to_string();
    }
    let head = budget / 4;
    let tail = budget - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!(
        "{start}\n[... {} characters omitted ...]\n{end}",
        n - head - tail
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_middle_keeps_head_and_tail() {
        assert_eq!(cut_middle("short", 10), "short");
        let t: String = (0..100)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let c = cut_middle(&t, 20);
        assert!(c.starts_with(&t[..5]));
        assert!(c.ends_with(&t[85..]));
        assert!(c.contains("80 characters omitted"));
    }
}
