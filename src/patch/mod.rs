//! Model replies to files: [`parser`] turns text into blocks (whole files,
//! [`edit`]s, [`diff`]s), [`mod@apply`] writes them into the workspace,
//! confined to it; [`write_back`] does the
//! same for the files a run sends back.

pub mod apply;
pub mod diff;
pub mod edit;
pub mod parser;
pub mod write_back;

pub use apply::{apply, ApplyOptions, ApplyReport};
pub use parser::{parse, Block, Change, ParsedReply, Refusal, RefusalReason};
