//! urun's loader (placeholder).
