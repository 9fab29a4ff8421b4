//! Macros for the two recurring wire idioms of App Mesh: string enums and one-of unions.

/// A string enum that keeps unknown values so validation can report them all at once.
///
/// Deserializing never fails on an unknown value; it becomes `Unknown(String)`,
/// which [`crate::validate`] reports with the field path and the allowed values.
macro_rules! string_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value outside the enum, kept verbatim so validation can name it.
            Unknown(String),
        }

        impl $name {
            /// Every value the API accepts, in model order.
            pub const VALUES: &'static [&'static str] = &[$($s),+];

            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $s,)+
                    Self::Unknown(s) => s,
                }
            }

            /// Parses the wire spelling; never fails.
            pub fn parse(s: &str) -> Self {
                match s {
                    $($s => Self::$variant,)+
                    other => Self::Unknown(other.to_owned()),
                }
            }

            /// True when the value is one of [`Self::VALUES`].
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Unknown(_))
            }
        }

        impl $crate::validate::WireEnum for $name {
            fn values() -> &'static [&'static str] {
                Self::VALUES
            }
            fn wire(&self) -> &str {
                self.as_str()
            }
            fn is_known(&self) -> bool {
                !matches!(self, Self::Unknown(_))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                Ok(Self::parse(&s))
            }
        }
    };
}

/// A tagged union of the App Mesh model: a JSON object with exactly one member set.
///
/// Serializes as `{"member": value}`. Deserializing rejects `{}`, two members,
/// and unknown members with a message naming the allowed members; a member set
/// to `null` next to a real one is ignored, as AWS clients do.
macro_rules! one_of {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident($s:literal, $ty:ty)),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant($ty),)+
        }

        impl $name {
            /// The member names, in model order.
            pub const MEMBERS: &'static [&'static str] = &[$($s),+];

            /// The wire name of the member that is set.
            pub fn member(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $s,)+
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                match self {
                    $(Self::$variant(v) => m.serialize_entry($s, v)?,)+
                }
                m.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "an object with exactly one of: {}", $name::MEMBERS.join(", "))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut found: Option<$name> = None;
                        while let Some(key) = map.next_key::<String>()? {
                            let value = match key.as_str() {
                                $($s => map.next_value::<Option<$ty>>()?.map($name::$variant),)+
                                other => {
                                    return Err(serde::de::Error::custom(format!(
                                        "unknown member `{other}`, expected exactly one of: {}",
                                        $name::MEMBERS.join(", ")
                                    )))
                                }
                            };
                            if let Some(v) = value {
                                if let Some(prev) = &found {
                                    return Err(serde::de::Error::custom(format!(
                                        "only one member may be set, found `{}` and `{}`",
                                        prev.member(),
                                        v.member()
                                    )));
                                }
                                found = Some(v);
                            }
                        }
                        found.ok_or_else(|| {
                            serde::de::Error::custom(format!(
                                "exactly one member must be set, one of: {}",
                                $name::MEMBERS.join(", ")
                            ))
                        })
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}
