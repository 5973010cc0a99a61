//! Source files: their text, their display path and line lookup.

use std::path::{Path, PathBuf};

use crate::syntax::ast::Span;

/// Index of a file in a [`Sources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as shown to users and written into the IR's source map: relative to
    /// the working directory when the file is under it, with `/` separators; stdlib
    /// files show as `std/<name>.eflow`.
    pub name: String,
    /// Where the file lives on disk, if it does (stdlib files are embedded).
    pub path: Option<PathBuf>,
    pub text: String,
    line_starts: Vec<u32>,
}

/// A 1-based line and column (column counted in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    pub line: u32,
    pub col: u32,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, path: Option<PathBuf>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i as u32 + 1),
        );
        SourceFile {
            name: name.into(),
            path,
            text,
            line_starts,
        }
    }

    /// Line and column of a byte offset (clamped to the text).
    pub fn line_col(&self, offset: u32) -> LineCol {
        let offset = offset.min(self.text.len() as u32);
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line] as usize;
        let mut end = offset as usize;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        LineCol {
            line: line as u32 + 1,
            col: self.text[start..end].chars().count() as u32 + 1,
        }
    }

    /// Byte offset of a 0-based line and a UTF-16 column, as editors send them.
    pub fn offset_utf16(&self, line: u32, col: u32) -> usize {
        let Some(&start) = self.line_starts.get(line as usize) else {
            return self.text.len();
        };
        let mut units = 0;
        for (i, c) in self.text[start as usize..].char_indices() {
            if units >= col || c == '\n' {
                return start as usize + i;
            }
            units += c.len_utf16() as u32;
        }
        self.text.len()
    }

    pub fn snippet(&self, span: Span) -> &str {
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }
}

/// All files of one analysis, addressed by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
    by_path: std::collections::HashMap<PathBuf, FileId>,
    by_name: std::collections::HashMap<String, FileId>,
}

impl Sources {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        let id = FileId(self.files.len() as u32);
        if let Some(p) = &file.path {
            self.by_path.entry(p.clone()).or_insert(id);
        }
        self.by_name.entry(file.name.clone()).or_insert(id);
        self.files.push(file);
        id
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn find_path(&self, path: &Path) -> Option<FileId> {
        self.by_path.get(path).copied()
    }

    pub fn find_name(&self, name: &str) -> Option<FileId> {
        self.by_name.get(name).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl Sources {
    /// Replace a file's text (an edit in an editor).
    /// The file keeps its id, path and name.
    pub fn replace(&mut self, id: FileId, file: SourceFile) {
        self.files[id.0 as usize] = file;
    }
}
