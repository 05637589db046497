//! Property tests of the request validators: never a panic, and what passes obeys the rules.

use domain_events::model::{ApprovalStatus, ConversationState, Decision, Role, TaskStatus};
use proptest::prelude::*;
use services::validate::{self, PageRequest};

proptest! {
    #[test]
    fn required_text_passes_only_trimmed_bounded_non_empty_text(value in "\\PC{0,80}|[ \\t\\n]{0,5}.{0,5}[ \\t]{0,5}", max in 1usize..60) {
        match validate::required_text("field", &value, max) {
            Ok(kept) => {
                prop_assert_eq!(kept.as_str(), value.trim());
                prop_assert!(!kept.is_empty());
                prop_assert!(kept.chars().count() <= max);
                prop_assert!(!kept.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')));
            }
            Err(e) => {
                prop_assert_eq!(e.field, "field");
                let trimmed = value.trim();
                prop_assert!(
                    trimmed.is_empty()
                        || trimmed.chars().count() > max
                        || trimmed.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                );
            }
        }
    }

    #[test]
    fn usernames_are_exactly_3_to_64_safe_characters(value in ".{0,70}|[a-zA-Z0-9._-]{0,70}") {
        let ok = (3..=64).contains(&value.chars().count())
            && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        prop_assert_eq!(validate::username("username", &value).is_ok(), ok);
    }

    #[test]
    fn passwords_are_8_to_256_characters(value in ".{0,300}") {
        let n = value.chars().count();
        prop_assert_eq!(validate::password(&value).is_ok(), (8..=256).contains(&n));
    }

    #[test]
    fn enum_values_accept_exactly_their_spellings(value in "[a-z_]{0,12}") {
        let spellings = ["pending", "in_progress", "completed"];
        prop_assert_eq!(validate::enum_value::<TaskStatus>("status", &value).is_ok(), spellings.contains(&value.as_str()));
        let _ = validate::enum_value::<ConversationState>("state", &value);
        let _ = validate::enum_value::<ApprovalStatus>("status", &value);
        let _ = validate::enum_value::<Decision>("decision", &value);
        let _ = validate::enum_value::<Role>("role", &value);
    }

    #[test]
    fn pages_are_1_to_200_with_positive_cursors(limit in proptest::option::of(any::<i64>()), cursor in proptest::option::of(any::<i64>())) {
        let result = PageRequest { limit, cursor }.validated();
        let ok = limit.is_none_or(|l| (1..=200).contains(&l)) && cursor.is_none_or(|c| c >= 1);
        prop_assert_eq!(result.is_ok(), ok);
    }
}
