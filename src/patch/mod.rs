//! Model replies to files: [`parser`] turns text into blocks, [`mod@apply`]
//! writes them into the workspace, confined to it.

pub mod apply;
pub mod parser;

pub use apply::{apply, ApplyOptions, ApplyReport};
pub use parser::{parse, Block, ParsedReply, Refusal, RefusalReason};
