//! Kubernetes quantities (`4Gi`, `500m`) as numbers, for sizing decisions (pure).

/// Bytes in a memory quantity such as `4Gi`, `512Mi`, `8G`; `None` when it is not one.
pub fn memory_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, unit) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        _ => return None,
    };
    Some((n * factor) as u64)
}

/// PostgreSQL memory setting in whole megabytes (`3200MB`).
pub fn postgres_mb(bytes: u64) -> String {
    format!("{}MB", (bytes / (1024 * 1024)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!(memory_bytes("4Gi"), Some(4 * 1024 * 1024 * 1024));
        assert_eq!(memory_bytes("512Mi"), Some(512 * 1024 * 1024));
        assert_eq!(memory_bytes("1.5G"), Some(1_500_000_000));
        assert_eq!(memory_bytes("lots"), None);
        assert_eq!(postgres_mb(4 * 1024 * 1024 * 1024 / 4), "1024MB");
    }
}
