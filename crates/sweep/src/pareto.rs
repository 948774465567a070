//! Pareto fronts and best-per-objective choices over sweep points. Every objective is
//! minimised (bytes, calls, nanoseconds).

/// Indices of the points no other point dominates (another point dominates `i` when it is no
/// worse on both axes and better on one). Points with a NaN coordinate are never on the front;
/// identical points are on it together. Sorted by `x`, then `y`, then index.
pub fn front(points: &[(f64, f64)]) -> Vec<usize> {
    let ok = |p: &(f64, f64)| !p.0.is_nan() && !p.1.is_nan();
    let mut out: Vec<usize> = (0..points.len())
        .filter(|&i| ok(&points[i]))
        .filter(|&i| {
            let (xi, yi) = points[i];
            !points
                .iter()
                .filter(|p| ok(p))
                .any(|&(x, y)| x <= xi && y <= yi && (x < xi || y < yi))
        })
        .collect();
    out.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[a].1.total_cmp(&points[b].1))
            .then(a.cmp(&b))
    });
    out
}

/// The indices of the lowest non-NaN value (every index that ties for it, ascending); empty
/// when there is none.
pub fn best(values: &[f64]) -> Vec<usize> {
    let min = values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f64::INFINITY, f64::min);
    if min.is_infinite() {
        return Vec::new();
    }
    (0..values.len()).filter(|&i| values[i] == min).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_of_known_points() {
        // a (1,5), b (2,4), e (3,2), d (5,1) trade x against y; c (4,3) and f (4,4) are worse
        // than e on both axes.
        let pts = [
            (1.0, 5.0),      // 0 a
            (2.0, 4.0),      // 1 b
            (4.0, 3.0),      // 2 c: dominated by e
            (5.0, 1.0),      // 3 d
            (3.0, 2.0),      // 4 e
            (4.0, 4.0),      // 5 f: dominated by b and e
            (2.0, 4.0),      // 6 b again: ties are both on the front
            (1.0, 6.0),      // 7 same x as a, worse y: dominated
            (f64::NAN, 0.0), // 8 never
        ];
        assert_eq!(front(&pts), vec![0, 1, 6, 4, 3]);
        assert_eq!(front(&[]), Vec::<usize>::new());
        assert_eq!(front(&[(3.0, 3.0)]), vec![0]);
        // One point better on both axes takes the whole front.
        assert_eq!(front(&[(2.0, 2.0), (1.0, 1.0), (1.0, 3.0)]), vec![1]);
    }

    #[test]
    fn best_lists_ties() {
        assert_eq!(best(&[3.0, 1.0, 2.0, 1.0]), vec![1, 3]);
        assert_eq!(best(&[f64::NAN, 5.0]), vec![1]);
        assert!(best(&[f64::NAN]).is_empty());
        assert!(best(&[]).is_empty());
    }
}
