//! A tiny calculator with a bug for autodev to find.

/// Returns the sum of `a` and `b`.
pub fn add(a: i64, b: i64) -> i64 {
    a - b
}

#[cfg(test)]
mod tests {
    use super::add;

    #[test]
    fn small_numbers() {
        assert_eq!(add(2, 3), 5);
    }

    #[test]
    fn zero() {
        assert_eq!(add(0, 7), 7);
    }
}
