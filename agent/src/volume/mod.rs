//! The target directory of a volume: mounting it ([`mount`]), writing its files atomically ([`writer`]),
//! reading them back ([`mounted_files`]), and the record of what is mounted ([`state`]).

pub(crate) mod mount;
pub(crate) mod mounted_files;
pub(crate) mod state;
pub(crate) mod writer;
