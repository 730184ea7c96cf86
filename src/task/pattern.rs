//! A parameter's `pattern`, tested as a Worker's `new RegExp(pattern).test(value)`
//! would (JavaScript, no flags, not anchored), with the ECMAScript engine `regress`.
//!
//! Only a conservative subset of the syntax is compiled: the one where `regress`
//! and V8 cannot disagree. Anything else (Annex B oddities such as a lone `{` or
//! `]`, octal and identity escapes, `\p` without the `u` flag, back-references,
//! lookarounds, named groups, characters beyond U+FFFF, a quantified group that
//! holds a quantifier or `|`) is not compiled, and the schema is forwarded
//! unchecked. A test that could take long (see [`MAX_STEPS`]) or whose string holds
//! characters beyond U+FFFF (where JavaScript matches UTF-16 units and `regress`
//! code points) answers "unsure": forward.

/// The most backtracking steps a test may take at worst, as bounded by
/// [`Pattern::worst_steps`]; beyond it the test is not run (forward). About a
/// millisecond or two of matching at worst, on the data path.
pub const MAX_STEPS: u64 = 2_000_000;

/// Longest pattern compiled, in characters.
const MAX_PATTERN_CHARS: usize = 512;

/// Largest `{n,m}` bound compiled.
const MAX_REPEAT: u32 = 1000;

/// A compiled `pattern`.
#[derive(Debug, Clone)]
pub struct Pattern {
    regex: regress::Regex,
    /// The largest repetition count of each quantifier (`None`: unbounded).
    repeats: Vec<Option<u32>>,
    /// Product of the alternatives' counts of every `|` list.
    branches: u64,
}

/// What the syntax scan found.
#[derive(Default)]
struct Shape {
    repeats: Vec<Option<u32>>,
    branches: u64,
}

/// An atom just parsed, as far as a following quantifier cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Nothing quantifiable (start, `|`, `^`, `$`, `\b`, or already quantified).
    None,
    /// A character, class or escape.
    Simple,
    /// A group; `true` when it holds a quantifier or `|` (quantifying it would nest).
    Group(bool),
}

struct Scanner<'a> {
    chars: &'a [char],
    at: usize,
    shape: Shape,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn hex(&mut self, digits: usize) -> Option<u32> {
        let mut n = 0;
        for _ in 0..digits {
            n = n * 16 + self.bump()?.to_digit(16)?;
        }
        Some(n)
    }

    /// A disjunction up to `)` (inside a group) or the end; `true` when it holds
    /// a quantifier or `|`.
    fn disjunction(&mut self, in_group: bool) -> Option<bool> {
        let quantifiers_before = self.shape.repeats.len();
        let mut alternatives: u64 = 1;
        let mut last = Last::None;
        loop {
            let Some(c) = self.bump() else {
                if in_group {
                    return None;
                }
                break;
            };
            match c {
                ')' if in_group => break,
                '|' => {
                    alternatives += 1;
                    last = Last::None;
                }
                '(' => {
                    if self.peek() == Some('?') {
                        self.bump();
                        // Only `(?:`: lookarounds and named groups are left out.
                        (self.bump()? == ':').then_some(())?;
                    }
                    last = Last::Group(self.disjunction(true)?);
                }
                '[' => {
                    self.class()?;
                    last = Last::Simple;
                }
                '^' | '$' => last = Last::None,
                '.' => last = Last::Simple,
                '\\' => {
                    last = match self.bump()? {
                        'b' | 'B' => Last::None,
                        'd' | 'D' | 'w' | 'W' | 's' | 'S' => Last::Simple,
                        e => {
                            self.char_escape(e)?;
                            Last::Simple
                        }
                    }
                }
                '*' | '+' | '?' | '{' => {
                    let max = match c {
                        '*' | '+' => None,
                        '?' => Some(1),
                        _ => self.braces()?,
                    };
                    match last {
                        Last::Simple | Last::Group(false) => {}
                        // Nothing to repeat, a repeated quantifier, or a nested one.
                        Last::None | Last::Group(true) => return None,
                    }
                    if self.peek() == Some('?') {
                        self.bump();
                    }
                    self.shape.repeats.push(max);
                    last = Last::None;
                }
                // Literal in Annex B only.
                ']' | '}' => return None,
                _ => last = Last::Simple,
            }
        }
        self.shape.branches = self.shape.branches.saturating_mul(alternatives);
        Some(alternatives > 1 || self.shape.repeats.len() > quantifiers_before)
    }

    /// `{n}`, `{n,}` or `{n,m}` after the `{`: the largest count (`None`: unbounded).
    fn braces(&mut self) -> Option<Option<u32>> {
        let min = self.number()?;
        let max = match self.bump()? {
            '}' => return Some(Some(min)),
            ',' if self.peek() == Some('}') => None,
            ',' => Some(self.number()?),
            _ => return None,
        };
        (self.bump()? == '}').then_some(())?;
        match max {
            Some(max) if max < min => None,
            max => Some(max),
        }
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let digits: String = self.chars[start..self.at].iter().collect();
        digits.parse().ok().filter(|n| *n <= MAX_REPEAT)
    }

    /// An escape standing for one character (after the `\`): its code.
    fn char_escape(&mut self, e: char) -> Option<u32> {
        Some(match e {
            'n' => 0x0A,
            'r' => 0x0D,
            't' => 0x09,
            'f' => 0x0C,
            'v' => 0x0B,
            'x' => self.hex(2)?,
            // A surrogate would be half a character here and a unit in JavaScript.
            'u' => self.hex(4).filter(|u| !(0xD800..=0xDFFF).contains(u))?,
            '^' | '$' | '\\' | '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|'
            | '/' | '-' => e as u32,
            _ => return None,
        })
    }

    /// A class after its `[`, up to its `]`.
    fn class(&mut self) -> Option<()> {
        if self.peek() == Some('^') {
            self.bump();
        }
        // `[]` and `[^]` read differently across dialects.
        if self.peek() == Some(']') {
            return None;
        }
        loop {
            let start = match self.class_atom()? {
                ClassAtom::End => return Some(()),
                atom => atom,
            };
            let is_range = self.peek() == Some('-') && self.chars.get(self.at + 1) != Some(&']');
            if !is_range {
                continue;
            }
            self.bump();
            match (start, self.class_atom()?) {
                (ClassAtom::Char(lo), ClassAtom::Char(hi)) if lo <= hi => {}
                // `[\d-z]`, `[a-\d]`, `[z-a]`: Annex B reads some, others refuse them.
                _ => return None,
            }
        }
    }

    fn class_atom(&mut self) -> Option<ClassAtom> {
        Some(match self.bump()? {
            ']' => ClassAtom::End,
            '[' => return None,
            '\\' => match self.bump()? {
                'd' | 'D' | 'w' | 'W' | 's' | 'S' => ClassAtom::Set,
                // `[\b]` is a backspace.
                'b' | 'B' => return None,
                e => ClassAtom::Char(self.char_escape(e)?),
            },
            c => ClassAtom::Char(c as u32),
        })
    }
}

#[derive(Clone, Copy)]
enum ClassAtom {
    End,
    Char(u32),
    Set,
}

impl Pattern {
    /// Compiles `source` when it is in the subset where JavaScript and `regress`
    /// agree and `regress` accepts it; `None` otherwise (the schema is forwarded).
    pub fn compile(source: &str) -> Option<Pattern> {
        let chars: Vec<char> = source.chars().collect();
        if chars.len() > MAX_PATTERN_CHARS || chars.iter().any(|c| *c as u32 > 0xFFFF) {
            return None;
        }
        let mut scanner = Scanner {
            chars: &chars,
            at: 0,
            shape: Shape {
                branches: 1,
                ..Shape::default()
            },
        };
        scanner.disjunction(false)?;
        // No flags: not global, not sticky, not Unicode, as `new RegExp(pattern)`.
        let regex = regress::Regex::with_flags(source, regress::Flags::default()).ok()?;
        Some(Pattern {
            regex,
            repeats: scanner.shape.repeats,
            branches: scanner.shape.branches,
        })
    }

    /// A bound on the backtracking steps a test of a string of `units` characters
    /// may take: each start position, times every combination of repetition
    /// counts and alternatives.
    pub fn worst_steps(&self, units: usize) -> u64 {
        let n = units as u64;
        self.repeats
            .iter()
            .map(|max| max.map_or(n, |m| u64::from(m).min(n)) + 1)
            .fold((n + 1).saturating_mul(self.branches), u64::saturating_mul)
    }

    /// `RegExp.prototype.test(value)`: `Some(matched)`, or `None` when it cannot be
    /// told cheaply and surely (a character beyond U+FFFF, or too many steps).
    pub fn test(&self, value: &str) -> Option<bool> {
        if value.chars().any(|c| c as u32 > 0xFFFF) {
            return None;
        }
        // Every character is one UTF-16 unit here.
        if self.worst_steps(value.chars().count()) > MAX_STEPS {
            return None;
        }
        Some(self.regex.find(value).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(p: &str, s: &str) -> Option<bool> {
        Pattern::compile(p).expect(p).test(s)
    }

    #[test]
    fn not_anchored_and_ascii_classes_as_in_javascript() {
        assert_eq!(test("abc", "xxabcxx"), Some(true));
        assert_eq!(test("^[a-z]+$", "aBc"), Some(false));
        assert_eq!(test("^[a-z]+$", "abc"), Some(true));
        // `\d` and `\w` are ASCII-only without the `u` flag.
        assert_eq!(test(r"^\d+$", "١٢"), Some(false));
        assert_eq!(test(r"^\w+$", "é"), Some(false));
        assert_eq!(test(r"^.$", "é"), Some(true));
        assert_eq!(test(r"^.$", "\n"), Some(false), "`.` stops at line ends");
        assert_eq!(test(r"^\s$", "\u{a0}"), Some(true), "NBSP is white space");
        assert_eq!(test(r"^a{2,3}$", "aaaa"), Some(false));
        assert_eq!(test(r"^(?:ab|cd)$", "cd"), Some(true));
        assert_eq!(test(r"^(ab)+$", "abab"), Some(true));
        assert_eq!(test(r"^\u0041\x42$", "AB"), Some(true));
        assert_eq!(test(r"^[\-a]$", "-"), Some(true));
        assert_eq!(test(r"^[a-c-]$", "-"), Some(true));
        assert_eq!(test(r"colou?r", "my color"), Some(true));
    }

    #[test]
    fn constructs_where_dialects_may_differ_are_not_compiled() {
        for p in [
            "a{", "a}", "]", "{1}", r"\1", r"(a)\1", r"\0", r"\012", r"\a", r"\p{L}", r"\k<n>",
            r"\cA", "(?=a)", "(?!a)", "(?<=a)", "(?<n>a)", "(?i:a)", "[]", "[^]", r"[\b]",
            r"[\d-z]", "[z-a]", "[[]", "(a+)+", "(a|b)*", "a**", "*a", "^*", r"\b+", "😀",
            r"\ud83d", "(", ")", "a{3,2}", "a{1001}", "[a",
        ] {
            assert!(Pattern::compile(p).is_none(), "{p:?} compiled");
        }
        assert!(Pattern::compile(&"a".repeat(MAX_PATTERN_CHARS + 1)).is_none());
    }

    #[test]
    fn a_string_beyond_the_bmp_or_a_costly_test_is_unsure() {
        // JavaScript sees "😀" as two units: `^.$` fails there, a code point engine
        // would match.
        assert_eq!(test("^.$", "😀"), None);
        assert_eq!(test("^[a-z]+$", "ab"), Some(true));
        let p = Pattern::compile("a*a*a*a*b").unwrap();
        assert!(p.worst_steps(10_000) > MAX_STEPS);
        assert_eq!(p.test(&"a".repeat(10_000)), None);
        assert_eq!(p.test("aab"), Some(true));
    }
}
