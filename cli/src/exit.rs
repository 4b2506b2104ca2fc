//! Exit codes, ripgrep-style: 0 success, 1 the experiment's hypothesis did not hold,
//! 2 bad input or a setup error.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    HypothesisFailed = 1,
    BadInput = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}
