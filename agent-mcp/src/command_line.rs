//! [`parse_command_line`]: `'cmd arg "two words"'` → a [`ProcessCommand`], without a shell.

use agent_core::process::ProcessCommand;

/// Split a command line into a program and arguments the way a POSIX shell splits words
/// (whitespace; `'…'` and `"…"` quoting; `\` escapes outside single quotes), without running
/// a shell: no variables, globs or pipes.
///
/// ```
/// let cmd = agent_mcp::parse_command_line(r#"python3 -m server --name "my server" 'a b'"#).unwrap();
/// assert_eq!(cmd.program, "python3");
/// assert_eq!(cmd.args, ["-m", "server", "--name", "my server", "a b"]);
/// assert!(agent_mcp::parse_command_line("  ").is_err());
/// assert!(agent_mcp::parse_command_line("echo 'open").is_err());
/// ```
pub fn parse_command_line(line: &str) -> Result<ProcessCommand, String> {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated ' in `{line}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated \" in `{line}`")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated \" in `{line}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(format!("a trailing \\ in `{line}`")),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let mut words = words.into_iter();
    let program = words
        .next()
        .ok_or_else(|| "an empty command line".to_owned())?;
    Ok(ProcessCommand::new(program).args(words))
}
