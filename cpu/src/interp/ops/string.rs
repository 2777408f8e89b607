//! (family not implemented yet)

use super::Table;

pub(super) fn register(_t: &mut Table) {}
