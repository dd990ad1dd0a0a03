//! The kinds of custody event and their names in the policy table and in messages.

use std::fmt;

use serde::Deserialize;

use crate::pb::event_body::Detail;

/// The kinds of custody event, named as in the TOML table (snake_case of the proto field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Enrolled,
    Collected,
    Packed,
    Shipped,
    Received,
    ManufacturingStep,
    QcResult,
    Released,
    Rejected,
    Stored,
    Dispensed,
    BedsideCheck,
    Infused,
    Hold,
    HoldReleased,
    Deviation,
    Destroyed,
    CustodyHandoff,
    LymphodepletionStarted,
    LymphodepletionCompleted,
    IdentityCheckFailed,
}

impl EventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [EventKind; 21] = [
        EventKind::Enrolled,
        EventKind::Collected,
        EventKind::Packed,
        EventKind::Shipped,
        EventKind::Received,
        EventKind::ManufacturingStep,
        EventKind::QcResult,
        EventKind::Released,
        EventKind::Rejected,
        EventKind::Stored,
        EventKind::Dispensed,
        EventKind::BedsideCheck,
        EventKind::Infused,
        EventKind::Hold,
        EventKind::HoldReleased,
        EventKind::Deviation,
        EventKind::Destroyed,
        EventKind::CustodyHandoff,
        EventKind::LymphodepletionStarted,
        EventKind::LymphodepletionCompleted,
        EventKind::IdentityCheckFailed,
    ];

    /// The kind of a custody detail; `None` for key-registry and log-link details, which never
    /// reach the policy.
    pub fn of(detail: &Detail) -> Option<EventKind> {
        Some(match detail {
            Detail::KeyRegistered(_)
            | Detail::KeyRevoked(_)
            | Detail::LogLink(_)
            | Detail::PolicyActivated(_) => return None,
            Detail::Enrolled(_) => EventKind::Enrolled,
            Detail::Collected(_) => EventKind::Collected,
            Detail::Packed(_) => EventKind::Packed,
            Detail::Shipped(_) => EventKind::Shipped,
            Detail::Received(_) => EventKind::Received,
            Detail::ManufacturingStep(_) => EventKind::ManufacturingStep,
            Detail::QcResult(_) => EventKind::QcResult,
            Detail::Released(_) => EventKind::Released,
            Detail::Rejected(_) => EventKind::Rejected,
            Detail::Stored(_) => EventKind::Stored,
            Detail::Dispensed(_) => EventKind::Dispensed,
            Detail::BedsideCheck(_) => EventKind::BedsideCheck,
            Detail::Infused(_) => EventKind::Infused,
            Detail::Hold(_) => EventKind::Hold,
            Detail::HoldReleased(_) => EventKind::HoldReleased,
            Detail::Deviation(_) => EventKind::Deviation,
            Detail::Destroyed(_) => EventKind::Destroyed,
            Detail::CustodyHandoff(_) => EventKind::CustodyHandoff,
            Detail::LymphodepletionStarted(_) => EventKind::LymphodepletionStarted,
            Detail::LymphodepletionCompleted(_) => EventKind::LymphodepletionCompleted,
            Detail::IdentityCheckFailed(_) => EventKind::IdentityCheckFailed,
        })
    }

    /// A detail of this kind with every field unset.
    pub fn blank_detail(self) -> Detail {
        use crate::pb;
        match self {
            EventKind::Enrolled => Detail::Enrolled(pb::Enrolled::default()),
            EventKind::Collected => Detail::Collected(pb::Collected::default()),
            EventKind::Packed => Detail::Packed(pb::Packed::default()),
            EventKind::Shipped => Detail::Shipped(pb::Shipped::default()),
            EventKind::Received => Detail::Received(pb::Received::default()),
            EventKind::ManufacturingStep => {
                Detail::ManufacturingStep(pb::ManufacturingStep::default())
            }
            EventKind::QcResult => Detail::QcResult(pb::QcResult::default()),
            EventKind::Released => Detail::Released(pb::Released::default()),
            EventKind::Rejected => Detail::Rejected(pb::Rejected::default()),
            EventKind::Stored => Detail::Stored(pb::Stored::default()),
            EventKind::Dispensed => Detail::Dispensed(pb::Dispensed::default()),
            EventKind::BedsideCheck => Detail::BedsideCheck(pb::BedsideCheck::default()),
            EventKind::Infused => Detail::Infused(pb::Infused::default()),
            EventKind::Hold => Detail::Hold(pb::Hold::default()),
            EventKind::HoldReleased => Detail::HoldReleased(pb::HoldReleased::default()),
            EventKind::Deviation => Detail::Deviation(pb::Deviation::default()),
            EventKind::Destroyed => Detail::Destroyed(pb::Destroyed::default()),
            EventKind::CustodyHandoff => Detail::CustodyHandoff(pb::CustodyHandoff::default()),
            EventKind::LymphodepletionStarted => {
                Detail::LymphodepletionStarted(pb::LymphodepletionStarted::default())
            }
            EventKind::LymphodepletionCompleted => {
                Detail::LymphodepletionCompleted(pb::LymphodepletionCompleted::default())
            }
            EventKind::IdentityCheckFailed => {
                Detail::IdentityCheckFailed(pb::IdentityCheckFailed::default())
            }
        }
    }

    /// The name used in the TOML table and in messages.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Enrolled => "enrolled",
            EventKind::Collected => "collected",
            EventKind::Packed => "packed",
            EventKind::Shipped => "shipped",
            EventKind::Received => "received",
            EventKind::ManufacturingStep => "manufacturing_step",
            EventKind::QcResult => "qc_result",
            EventKind::Released => "released",
            EventKind::Rejected => "rejected",
            EventKind::Stored => "stored",
            EventKind::Dispensed => "dispensed",
            EventKind::BedsideCheck => "bedside_check",
            EventKind::Infused => "infused",
            EventKind::Hold => "hold",
            EventKind::HoldReleased => "hold_released",
            EventKind::Deviation => "deviation",
            EventKind::Destroyed => "destroyed",
            EventKind::CustodyHandoff => "custody_handoff",
            EventKind::LymphodepletionStarted => "lymphodepletion_started",
            EventKind::LymphodepletionCompleted => "lymphodepletion_completed",
            EventKind::IdentityCheckFailed => "identity_check_failed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
