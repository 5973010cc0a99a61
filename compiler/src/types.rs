//! Types of values in flows, and the compatibility relation "may flow into".
//!
//! The rules are stated for users in `docs/language.md` ("Type compatibility");
//! [`Ty::flows_into`] is their one implementation.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::source::FileId;

/// A top-level item: its file and its index in the file's item list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DefId {
    pub file: FileId,
    pub item: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ty {
    Bool,
    Int,
    Float,
    String,
    Duration,
    Timestamp,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Optional(Box<Ty>),
    /// A record, nominal; `args` instantiate its type parameters.
    Record {
        def: DefId,
        name: Arc<str>,
        args: Vec<Ty>,
    },
    /// An enum, nominal.
    Enum {
        def: DefId,
        name: Arc<str>,
    },
    /// A type parameter of the generic declaration being checked.
    Param(Arc<str>),
    /// The type of `none`: flows into every optional type.
    None,
    /// What a step without output produces: nothing that can be used as a value.
    Unit,
    /// A type that could not be determined; its error has been reported, so it is
    /// compatible with everything to avoid cascades.
    Error,
}

impl Ty {
    pub fn optional(self) -> Ty {
        match self {
            Ty::Optional(_) | Ty::None | Ty::Error => self,
            other => Ty::Optional(Box::new(other)),
        }
    }

    pub fn is_optional(&self) -> bool {
        matches!(self, Ty::Optional(_) | Ty::None)
    }

    /// The type without its outer `?`.
    pub fn unwrap_optional(&self) -> &Ty {
        match self {
            Ty::Optional(inner) => inner,
            other => other,
        }
    }

    /// Whether a value of type `self` may be used where `target` is expected.
    pub fn flows_into(&self, target: &Ty) -> bool {
        match (self, target) {
            (Ty::Error, _) | (_, Ty::Error) => true,
            (s, t) if s == t => true,
            (Ty::Int, Ty::Float) => true,
            (Ty::None, Ty::Optional(_)) => true,
            (Ty::Optional(s), Ty::Optional(t)) => s.flows_into(t),
            (s, Ty::Optional(t)) => s.flows_into(t),
            (Ty::List(s), Ty::List(t)) => s.flows_into(t),
            (Ty::Map(sk, sv), Ty::Map(tk, tv)) => sk == tk && sv.flows_into(tv),
            (
                Ty::Record {
                    def: sd, args: sa, ..
                },
                Ty::Record {
                    def: td, args: ta, ..
                },
            ) => {
                sd == td && sa.len() == ta.len() && sa.iter().zip(ta).all(|(s, t)| s.flows_into(t))
            }
            _ => false,
        }
    }

    /// The smallest type both flow into, if there is one (for list literals and
    /// generic inference).
    pub fn join(&self, other: &Ty) -> Option<Ty> {
        if self.flows_into(other) {
            Some(other.clone())
        } else if other.flows_into(self) {
            Some(self.clone())
        } else {
            match (self, other) {
                (Ty::None, t) | (t, Ty::None) => Some(t.clone().optional()),
                (Ty::Optional(a), b) | (b, Ty::Optional(a)) => a.join(b).map(Ty::optional),
                _ => None,
            }
        }
    }

    /// Replace type parameters by their bindings; unbound ones stay.
    pub fn subst(&self, map: &HashMap<Arc<str>, Ty>) -> Ty {
        match self {
            Ty::Param(name) => map.get(name).cloned().unwrap_or_else(|| self.clone()),
            Ty::List(t) => Ty::List(Box::new(t.subst(map))),
            Ty::Map(k, v) => Ty::Map(Box::new(k.subst(map)), Box::new(v.subst(map))),
            Ty::Optional(t) => t.subst(map).optional(),
            Ty::Record { def, name, args } => Ty::Record {
                def: *def,
                name: name.clone(),
                args: args.iter().map(|a| a.subst(map)).collect(),
            },
            other => other.clone(),
        }
    }

    pub fn has_params(&self) -> bool {
        match self {
            Ty::Param(_) => true,
            Ty::List(t) | Ty::Optional(t) => t.has_params(),
            Ty::Map(k, v) => k.has_params() || v.has_params(),
            Ty::Record { args, .. } => args.iter().any(Ty::has_params),
            _ => false,
        }
    }

    /// Bind the type parameters in `self` (a parameter's declared type) so that
    /// `arg` flows into it. Returns false on a conflict.
    pub fn infer(&self, arg: &Ty, map: &mut HashMap<Arc<str>, Ty>) -> bool {
        match (self, arg) {
            (_, Ty::Error) => true,
            (Ty::Param(name), _) => match map.get(name) {
                None => {
                    map.insert(name.clone(), arg.clone());
                    true
                }
                Some(bound) => match bound.join(arg) {
                    Some(joined) => {
                        map.insert(name.clone(), joined);
                        true
                    }
                    None => false,
                },
            },
            (Ty::Optional(p), Ty::Optional(a)) => p.infer(a, map),
            (Ty::Optional(_), Ty::None) => true,
            (Ty::Optional(p), a) => p.infer(a, map),
            (Ty::List(p), Ty::List(a)) => p.infer(a, map),
            (Ty::Map(pk, pv), Ty::Map(ak, av)) => pk.infer(ak, map) && pv.infer(av, map),
            (
                Ty::Record {
                    def: pd, args: pa, ..
                },
                Ty::Record {
                    def: ad, args: aa, ..
                },
            ) => {
                pd == ad && pa.len() == aa.len() && pa.iter().zip(aa).all(|(p, a)| p.infer(a, map))
            }
            _ => true,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Bool => f.write_str("Bool"),
            Ty::Int => f.write_str("Int"),
            Ty::Float => f.write_str("Float"),
            Ty::String => f.write_str("String"),
            Ty::Duration => f.write_str("Duration"),
            Ty::Timestamp => f.write_str("Timestamp"),
            Ty::List(t) => write!(f, "List<{t}>"),
            Ty::Map(k, v) => write!(f, "Map<{k}, {v}>"),
            Ty::Optional(t) => write!(f, "{t}?"),
            Ty::Record { name, args, .. } => {
                f.write_str(name)?;
                if !args.is_empty() {
                    f.write_str("<")?;
                    for (i, a) in args.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{a}")?;
                    }
                    f.write_str(">")?;
                }
                Ok(())
            }
            Ty::Enum { name, .. } => f.write_str(name),
            Ty::Param(name) => f.write_str(name),
            Ty::None => f.write_str("none"),
            Ty::Unit => f.write_str("nothing"),
            Ty::Error => f.write_str("{unknown}"),
        }
    }
}

/// The built-in type names, in the order `did you mean` should prefer them.
pub const PRIMITIVES: &[(&str, Ty)] = &[
    ("Bool", Ty::Bool),
    ("Int", Ty::Int),
    ("Float", Ty::Float),
    ("String", Ty::String),
    ("Duration", Ty::Duration),
    ("Timestamp", Ty::Timestamp),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(item: u32, args: Vec<Ty>) -> Ty {
        Ty::Record {
            def: DefId {
                file: FileId(0),
                item,
            },
            name: "R".into(),
            args,
        }
    }

    #[test]
    fn compatibility_rules() {
        assert!(Ty::Int.flows_into(&Ty::Float));
        assert!(!Ty::Float.flows_into(&Ty::Int));
        assert!(Ty::Int.flows_into(&Ty::Int.optional()));
        assert!(!Ty::Int.optional().flows_into(&Ty::Int));
        assert!(Ty::None.flows_into(&Ty::String.optional()));
        assert!(!Ty::None.flows_into(&Ty::String));
        assert!(Ty::List(Box::new(Ty::Int)).flows_into(&Ty::List(Box::new(Ty::Float))));
        assert!(
            !Ty::Map(Box::new(Ty::Int), Box::new(Ty::Int))
                .flows_into(&Ty::Map(Box::new(Ty::String), Box::new(Ty::Int)))
        );
        assert!(rec(1, vec![Ty::Int]).flows_into(&rec(1, vec![Ty::Float])));
        assert!(!rec(1, vec![]).flows_into(&rec(2, vec![])));
    }

    #[test]
    fn inference_widens() {
        let mut map = HashMap::new();
        let t = Ty::Param("T".into());
        assert!(t.infer(&Ty::Int, &mut map));
        assert!(t.infer(&Ty::Float, &mut map));
        assert_eq!(map["T"], Ty::Float);
        assert!(!t.infer(&Ty::String, &mut map));
    }
}
