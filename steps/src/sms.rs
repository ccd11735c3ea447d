//! SMS encoding and segment counting (3GPP TS 23.038 and 23.040).
//!
//! An SMS carries 140 bytes. A message made only of GSM-7 characters is sent 7 bits a character:
//! 160 septets fit one SMS; a longer one is split into concatenated segments, each losing 6 bytes
//! to the concatenation header, so 153 septets a segment. The extension table's characters
//! (`€ [ ] { } ~ ^ \ |` and form feed) are an escape plus a character: two septets each. One
//! character outside GSM-7 (an emoji, `ç`, Cyrillic, a curly quote) makes the whole message UCS-2:
//! 70 UTF-16 code units in one SMS, 67 a segment, a character beyond the Basic Multilingual Plane
//! (most emoji) being two code units, a surrogate pair.
//!
//! A character never straddles two segments: an escape sequence or a surrogate pair that does not
//! fit in what is left of a segment starts the next one (as phones reassemble them, and as
//! Twilio's segment calculator counts). So `153 × n` septets can take `n + 1` segments when an
//! extension character lands on a boundary.
//!
//! Each segment is billed as one message, which is why the policy caps them
//! (`policy.templates.sms_segments_max`).
//!
//! No maintained crate does this counting (the one Rust port of Twilio's calculator saw two
//! releases in 2024), and it is two tables and a loop.

use serde::{Deserialize, Serialize};

/// Septets in a single GSM-7 SMS.
pub const GSM7_SINGLE: u32 = 160;
/// Septets per segment of a concatenated GSM-7 SMS.
pub const GSM7_SEGMENT: u32 = 153;
/// UTF-16 code units in a single UCS-2 SMS.
pub const UCS2_SINGLE: u32 = 70;
/// UTF-16 code units per segment of a concatenated UCS-2 SMS.
pub const UCS2_SEGMENT: u32 = 67;

/// The GSM 03.38 basic character set, in code order (0x1B, the escape, is left out).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: each is sent as the escape plus a code, two septets.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// How a message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// 7 bits a character.
    Gsm7,
    /// UTF-16, 16 bits a code unit.
    Ucs2,
}

/// What a message costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segments {
    /// The encoding the whole message needs.
    pub encoding: Encoding,
    /// How many SMS it is sent as (0 for an empty message).
    pub segments: u32,
    /// Its length in the encoding's units: septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: u32,
    /// Its length in characters (Unicode scalar values).
    pub characters: u32,
}

/// The septets a character takes in GSM-7, or `None` when it has no GSM-7 form.
fn gsm7_septets(c: char) -> Option<u32> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// How many segments `sizes` take, packed in order into segments of `per_segment` units once the
/// message exceeds `single` units; a size never straddles two segments.
fn pack(sizes: impl Iterator<Item = u32> + Clone, single: u32, per_segment: u32) -> (u32, u32) {
    let units: u32 = sizes.clone().sum();
    if units == 0 {
        return (0, 0);
    }
    if units <= single {
        return (1, units);
    }
    let (mut segments, mut used) = (1, 0);
    for size in sizes {
        if used + size > per_segment {
            segments += 1;
            used = 0;
        }
        used += size;
    }
    (segments, units)
}

/// Counts a message's segments.
pub fn segments(text: &str) -> Segments {
    let characters = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
    let gsm7 = text.chars().all(|c| gsm7_septets(c).is_some());
    let (encoding, (segments, units)) = if gsm7 {
        let sizes = text.chars().map(|c| gsm7_septets(c).unwrap_or(1));
        (Encoding::Gsm7, pack(sizes, GSM7_SINGLE, GSM7_SEGMENT))
    } else {
        let sizes = text.chars().map(|c| c.len_utf16() as u32);
        (Encoding::Ucs2, pack(sizes, UCS2_SINGLE, UCS2_SEGMENT))
    };
    Segments { encoding, segments, units, characters }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check(text: &str, encoding: Encoding, segments_: u32, units: u32) {
        let s = segments(text);
        assert_eq!(
            (s.encoding, s.segments, s.units),
            (encoding, segments_, units),
            "{} characters: {:?}",
            text.chars().count(),
            text.chars().take(12).collect::<String>()
        );
    }

    fn a(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn the_tables_have_the_standard_sizes() {
        // 128 codes, less the escape; 9 printable extension characters plus form feed.
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(GSM7_EXTENSION.chars().count(), 10);
        assert!(GSM7_BASIC.chars().all(|c| !GSM7_EXTENSION.contains(c)));
    }

    #[test]
    fn empty_is_no_segment() {
        check("", Encoding::Gsm7, 0, 0);
    }

    #[test]
    fn gsm7_single_and_concatenated_boundaries() {
        check(&a(1), Encoding::Gsm7, 1, 1);
        check(&a(160), Encoding::Gsm7, 1, 160);
        check(&a(161), Encoding::Gsm7, 2, 161);
        check(&a(306), Encoding::Gsm7, 2, 306);
        check(&a(307), Encoding::Gsm7, 3, 307);
        check(&a(153 * 6), Encoding::Gsm7, 6, 918);
        check(&a(153 * 6 + 1), Encoding::Gsm7, 7, 919);
        check(&a(153 * 10), Encoding::Gsm7, 10, 1_530);
    }

    #[test]
    fn the_whole_basic_set_is_gsm7_including_its_non_ascii_letters() {
        check("Ça coûte 5 £, ¡olé! Ünïcode? ΔΦΓ §¿", Encoding::Ucs2, 1, 35);
        // `û` and `ï` are not GSM-7, the rest of that line is:
        check(
            "Ça coute 5 £, ¡olé! Ünicode? ΔΦΓ §¿ @$¥èéùìòØøÅåÆæßÉÄÖÑÜäöñüà",
            Encoding::Gsm7,
            1,
            61,
        );
        check(GSM7_BASIC, Encoding::Gsm7, 1, 127);
    }

    #[test]
    fn extension_characters_count_two_septets() {
        for c in ['€', '{', '}', '[', ']', '~', '^', '\\', '|', '\u{0C}'] {
            check(&c.to_string(), Encoding::Gsm7, 1, 2);
        }
        // 80 of them fill one SMS exactly; one basic character more makes two.
        check(&"€".repeat(80), Encoding::Gsm7, 1, 160);
        check(&format!("{}a", "€".repeat(80)), Encoding::Gsm7, 2, 161);
        // 159 basic + 1 extension = 161 septets: over the single-SMS size.
        check(&format!("{}€", a(159)), Encoding::Gsm7, 2, 161);
        check(&format!("{}{{", a(158)), Encoding::Gsm7, 1, 160);
    }

    #[test]
    fn an_extension_character_never_straddles_a_segment_boundary() {
        // 152 + 2 = 154 > 153: the € opens segment 2, which then holds 153 septets exactly...
        check(&format!("{}€{}", a(152), a(151)), Encoding::Gsm7, 2, 305);
        // ...and one more septet needs a third, although 306 septets would fit in two.
        check(&format!("{}€{}", a(152), a(152)), Encoding::Gsm7, 3, 306);
        // At 151 + 2 = 153 it fits, and 306 septets take two segments.
        check(&format!("{}€{}", a(151), a(153)), Encoding::Gsm7, 2, 306);
        // Every boundary of a long message can lose a septet the same way.
        let chunk = format!("{}|", a(152));
        check(&chunk.repeat(6), Encoding::Gsm7, 7, 924);
    }

    #[test]
    fn one_character_outside_gsm7_makes_it_ucs2() {
        check(&format!("{}ç", a(69)), Encoding::Ucs2, 1, 70);
        check(&format!("{}ç", a(70)), Encoding::Ucs2, 2, 71);
        check(&format!("{}“", a(10)), Encoding::Ucs2, 1, 11);
        check("`", Encoding::Ucs2, 1, 1);
        // A GSM-7 extension character is one UTF-16 unit in UCS-2.
        check(&format!("€{}Ж", a(68)), Encoding::Ucs2, 1, 70);
        check(&"Ж".repeat(67 * 3), Encoding::Ucs2, 3, 201);
        check(&"Ж".repeat(67 * 3 + 1), Encoding::Ucs2, 4, 202);
    }

    #[test]
    fn emoji_are_surrogate_pairs_and_never_split() {
        check("😀", Encoding::Ucs2, 1, 2);
        check(&"😀".repeat(35), Encoding::Ucs2, 1, 70);
        // 36 emoji are 72 units; 33 fill a 67-unit segment (66), the rest go to the second.
        check(&"😀".repeat(36), Encoding::Ucs2, 2, 72);
        check(&format!("{}😀", a(68)), Encoding::Ucs2, 1, 70);
        check(&format!("{}😀", a(69)), Encoding::Ucs2, 2, 71);
        // 66 + 2 > 67: the pair opens segment 2, which then holds 67; one more needs a third.
        check(&format!("{}😀{}", a(66), a(65)), Encoding::Ucs2, 2, 133);
        check(&format!("{}😀{}", a(66), a(66)), Encoding::Ucs2, 3, 134);
        // A character of the Basic Multilingual Plane is one unit.
        check("✓", Encoding::Ucs2, 1, 1);
    }

    proptest! {
        /// Plain ASCII letters are GSM-7 and follow the textbook formula.
        #[test]
        fn basic_text_follows_the_formula(n in 0_usize..2_000) {
            let s = segments(&a(n));
            let n = n as u32;
            let expected = match n { 0 => 0, 1..=160 => 1, _ => n.div_ceil(153) };
            prop_assert_eq!((s.encoding, s.segments, s.units), (Encoding::Gsm7, expected, n));
        }

        /// Whatever the text, each segment holds at most its size, no fewer segments than the
        /// units need, and at most one segment more per character of the largest size.
        #[test]
        fn segments_are_bounded(text in "[a-z€😀Ж{ ]{0,400}") {
            let s = segments(&text);
            let (single, per) = match s.encoding {
                Encoding::Gsm7 => (GSM7_SINGLE, GSM7_SEGMENT),
                Encoding::Ucs2 => (UCS2_SINGLE, UCS2_SEGMENT),
            };
            if s.units <= single {
                prop_assert_eq!(s.segments, u32::from(s.units > 0));
            } else {
                prop_assert!(s.segments >= s.units.div_ceil(per));
                prop_assert!(s.segments <= s.units.div_ceil(per - 1));
            }
            prop_assert_eq!(s.characters as usize, text.chars().count());
        }
    }
}
