//! urun's Linux personality (placeholder).
