//! Development tasks for engram; the commands arrive in the next commit.

fn main() {}
