//! Cheap questions about signatures, asked before any signature is verified: how many
//! signatures any transition of the table takes at most, and whether a role may sign an event
//! kind with a meaning in some transition. Both ignore the chain's state and sites, so they
//! accept a superset of what [`Policy::apply`] accepts and never refuse an event it would take.
//! The ledger uses them to spend an ed25519 verification only on signatures that could count.

use super::{EventKind, Policy};
use crate::pb::SignatureMeaning;

/// Signatures an event may carry beyond the most any transition takes (required plus
/// optional). A small overage reaches the policy, which names the signer it does not expect;
/// anything more is refused before a single signature is verified.
pub const SIGNATURE_MARGIN: usize = 2;

impl Policy {
    /// The most signatures any transition of the table takes (required, or exceptional, plus
    /// optional).
    pub fn max_transition_signatures(&self) -> usize {
        self.table
            .rows
            .iter()
            .map(|row| {
                let required = row
                    .exceptional_signatures
                    .as_ref()
                    .map_or(0, Vec::len)
                    .max(row.signatures.len());
                required + row.optional_signatures.len()
            })
            .max()
            .unwrap_or(0)
    }

    /// Most signatures an event may carry: [`Policy::max_transition_signatures`] plus
    /// [`SIGNATURE_MARGIN`].
    pub fn signature_cap(&self) -> usize {
        self.max_transition_signatures() + SIGNATURE_MARGIN
    }

    /// Whether some transition of `kind`, in any state, takes a `meaning` signature from
    /// `role` (required, optional or exceptional slot; sites not considered).
    pub fn may_sign(&self, kind: EventKind, role: &str, meaning: SignatureMeaning) -> bool {
        self.table
            .rows
            .iter()
            .filter(|row| row.event == kind)
            .flat_map(|row| {
                row.signatures
                    .iter()
                    .chain(&row.optional_signatures)
                    .chain(row.exceptional_signatures.iter().flatten())
            })
            .any(|req| req.meaning == meaning && req.accepts_role(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_caps_signatures_at_its_largest_transition_plus_margin() {
        let p = Policy::default_autologous_car_t();
        let most = p.max_transition_signatures();
        assert!(
            (2..=6).contains(&most),
            "default table's largest transition: {most}"
        );
        assert_eq!(p.signature_cap(), most + SIGNATURE_MARGIN);
    }

    #[test]
    fn eligibility_follows_the_table_roles_and_meanings() {
        let p = Policy::default_autologous_car_t();
        // Bedside check: a nurse performs it; QA does not sign it; nobody RELEASES it.
        assert!(p.may_sign(
            EventKind::BedsideCheck,
            "nurse",
            SignatureMeaning::Performed
        ));
        assert!(!p.may_sign(EventKind::BedsideCheck, "nurse", SignatureMeaning::Released));
        assert!(!p.may_sign(EventKind::Released, "nurse", SignatureMeaning::Approved));
        assert!(p.may_sign(EventKind::Released, "qa", SignatureMeaning::Approved));
    }

    #[test]
    fn every_signer_apply_accepts_is_eligible() {
        // The superset property on the table itself: every slot's roles and meaning pass.
        let p = Policy::default_autologous_car_t();
        for row in &p.table.rows {
            for req in row
                .signatures
                .iter()
                .chain(&row.optional_signatures)
                .chain(row.exceptional_signatures.iter().flatten())
            {
                for role in &req.roles {
                    assert!(p.may_sign(row.event, role, req.meaning), "{row:?}");
                }
            }
        }
    }
}
