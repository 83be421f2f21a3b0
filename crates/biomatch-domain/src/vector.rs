//! Templates: finite vectors of a gallery's dimension, L2-normalised so that inner product is cosine.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VectorError {
    #[error("vector has {got} values but the gallery's dimension is {want}")]
    WrongDimension { got: usize, want: usize },
    #[error("vector contains a NaN or infinite value")]
    NotFinite,
    #[error("vector has zero length and cannot be normalised")]
    Zero,
}

impl crate::Classified for VectorError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::InvalidArgument
    }
}

/// A validated, L2-normalised vector. Its `Debug` never prints the values: templates are
/// biometric data and must not reach logs.
#[derive(Clone, PartialEq)]
pub struct Template(Vec<f32>);

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template(d={})", self.0.len())
    }
}

/// Checks a query vector against a gallery's dimension, without normalising it (a matcher is
/// sent probes the search role normalised; it checks them again, never trusting the wire).
pub fn check_query(values: &[f32], dimension: usize) -> Result<(), VectorError> {
    if values.len() != dimension {
        return Err(VectorError::WrongDimension { got: values.len(), want: dimension });
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(VectorError::NotFinite);
    }
    Ok(())
}

impl Template {
    /// Validates `values` against the gallery dimension and normalises them.
    pub fn new(mut values: Vec<f32>, dimension: usize) -> Result<Self, VectorError> {
        check_query(&values, dimension)?;
        let norm = values.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err(VectorError::Zero);
        }
        for v in &mut values {
            *v = (f64::from(*v) / norm) as f32;
        }
        Ok(Self(values))
    }

    pub fn values(&self) -> &[f32] {
        &self.0
    }

    pub fn dimension(&self) -> usize {
        self.0.len()
    }

    /// Little-endian bytes, the storage encoding.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Decodes stored bytes; `None` when the length does not fit the dimension.
    pub fn from_le_bytes(bytes: &[u8], dimension: usize) -> Option<Self> {
        if bytes.len() != dimension * 4 {
            return None;
        }
        let values = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Some(Self(values))
    }

    /// Cosine similarity with another template of the same dimension.
    pub fn dot(&self, other: &[f32]) -> f32 {
        self.0.iter().zip(other).map(|(a, b)| a * b).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_vectors() {
        assert_eq!(Template::new(vec![1.0; 3], 4), Err(VectorError::WrongDimension { got: 3, want: 4 }));
        assert_eq!(Template::new(vec![f32::NAN, 1.0], 2), Err(VectorError::NotFinite));
        assert_eq!(Template::new(vec![f32::INFINITY, 1.0], 2), Err(VectorError::NotFinite));
        assert_eq!(Template::new(vec![0.0, 0.0], 2), Err(VectorError::Zero));
    }

    #[test]
    fn debug_hides_values() {
        let t = Template::new(vec![0.123_456, 0.5], 2).expect("valid");
        assert_eq!(format!("{t:?}"), "Template(d=2)");
    }

    proptest! {
        #[test]
        fn normalised_and_round_trips(values in prop::collection::vec(-1000.0f32..1000.0, 1..64)) {
            prop_assume!(values.iter().any(|v| v.abs() > 1e-3));
            let d = values.len();
            let t = Template::new(values, d).expect("valid");
            let norm: f32 = t.values().iter().map(|v| v * v).sum::<f32>().sqrt();
            prop_assert!((norm - 1.0).abs() < 1e-4);
            let back = Template::from_le_bytes(&t.to_le_bytes(), d).expect("same length");
            prop_assert_eq!(back, t);
        }
    }
}
