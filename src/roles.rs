//! Roles: who may do what in a group, the one permission table (docs/protocol.md, "Group roles"),
//! checked by every path that changes a group or sends to it, with the group's row locked.

use crate::{
    domain::Role,
    error::{ApiError, ErrorCode},
};

/// Who acts: the app through the server API, or a current member with their role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    App,
    Member(Role),
}

/// What they want to do; acts on another member carry that member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Change the name, avatar, announcement or the group-wide mute.
    Update,
    Dissolve,
    AddMembers,
    Kick(Role),
    /// Set or lift a member's mute.
    Mute(Role),
    /// Make a member an admin or a plain member again.
    SetRole(Role),
    /// Hand the group to another member (the owner becomes an admin).
    TransferOwnership(Role),
    Leave,
}

/// Why an act is refused; each has its own stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Only the owner and admins may.
    AdminOnly,
    /// Only the owner may.
    OwnerOnly,
    /// The target's role is not below the actor's.
    Outranked,
    /// Nobody kicks, mutes or demotes the owner: ownership is transferred first.
    OwnerProtected,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::AdminOnly => ApiError::new(ErrorCode::AdminOnly, "only the group's owner or an admin may do this"),
            Refusal::OwnerOnly => ApiError::new(ErrorCode::OwnerOnly, "only the group's owner may do this"),
            Refusal::Outranked => {
                ApiError::new(ErrorCode::Outranked, "an admin may act only on plain members, not on other admins")
            }
            Refusal::OwnerProtected => ApiError::new(
                ErrorCode::OwnerProtected,
                "the owner cannot be kicked, muted or demoted; transfer ownership first",
            ),
        }
    }
}

/// The table. Acts on oneself (leaving) are allowed to every member; acts on the owner are
/// refused to everyone, the app included, except taking ownership (which needs a non-owner).
pub fn check(actor: Actor, act: Act) -> Result<(), Refusal> {
    use Act::*;
    use Role::*;
    let target = match act {
        Kick(t) | Mute(t) | SetRole(t) | TransferOwnership(t) => Some(t),
        Update | Dissolve | AddMembers | Leave => None,
    };
    if target == Some(Owner) {
        return Err(Refusal::OwnerProtected);
    }
    match (actor, act) {
        (Actor::Member(_), Leave) => Ok(()),
        // The app may do anything but touch the owner (it has no membership to leave: its
        // server API kicks instead).
        (Actor::App, _) => Ok(()),
        (Actor::Member(Owner), _) => Ok(()),
        (Actor::Member(Admin), Update | AddMembers) => Ok(()),
        (Actor::Member(Admin), Kick(Member) | Mute(Member)) => Ok(()),
        (Actor::Member(Admin), Kick(_) | Mute(_)) => Err(Refusal::Outranked),
        (Actor::Member(Admin), Dissolve | SetRole(_) | TransferOwnership(_)) => Err(Refusal::OwnerOnly),
        (Actor::Member(Member), Dissolve | SetRole(_) | TransferOwnership(_)) => Err(Refusal::OwnerOnly),
        (Actor::Member(Member), _) => Err(Refusal::AdminOnly),
    }
}

/// Whether a member may send now: the app always may; a silenced member may not; a muted group
/// hears only its owner and admins.
pub fn may_send(role: Role, group_muted: bool, silenced_until: Option<i64>, now: i64) -> Result<(), SendRefusal> {
    if silenced_until.is_some_and(|t| t > now) {
        return Err(SendRefusal::Silenced);
    }
    if group_muted && role == Role::Member {
        return Err(SendRefusal::GroupMuted);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefusal {
    Silenced,
    GroupMuted,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every actor × every act, written out as the docs' table reads.
    #[test]
    fn the_table_allows_and_refuses_every_actor_and_act_as_documented() {
        use Act::*;
        use Refusal::*;
        use Role::*;
        let y = Ok(());
        let owner = Actor::Member(Owner);
        let admin = Actor::Member(Admin);
        let member = Actor::Member(Member);
        let app = Actor::App;
        #[rustfmt::skip]
        let table: Vec<(Act, [Result<(), Refusal>; 4])> = vec![
            //                          owner               admin               member              app
            (Update,                    [y,                 y,                  Err(AdminOnly),     y]),
            (Dissolve,                  [y,                 Err(OwnerOnly),     Err(OwnerOnly),     y]),
            (AddMembers,                [y,                 y,                  Err(AdminOnly),     y]),
            (Kick(Member),              [y,                 y,                  Err(AdminOnly),     y]),
            (Kick(Admin),               [y,                 Err(Outranked),     Err(AdminOnly),     y]),
            (Kick(Owner),               [Err(OwnerProtected), Err(OwnerProtected), Err(OwnerProtected), Err(OwnerProtected)]),
            (Mute(Member),              [y,                 y,                  Err(AdminOnly),     y]),
            (Mute(Admin),               [y,                 Err(Outranked),     Err(AdminOnly),     y]),
            (Mute(Owner),               [Err(OwnerProtected), Err(OwnerProtected), Err(OwnerProtected), Err(OwnerProtected)]),
            (SetRole(Member),           [y,                 Err(OwnerOnly),     Err(OwnerOnly),     y]),
            (SetRole(Admin),            [y,                 Err(OwnerOnly),     Err(OwnerOnly),     y]),
            (SetRole(Owner),            [Err(OwnerProtected), Err(OwnerProtected), Err(OwnerProtected), Err(OwnerProtected)]),
            (TransferOwnership(Member), [y,                 Err(OwnerOnly),     Err(OwnerOnly),     y]),
            (TransferOwnership(Admin),  [y,                 Err(OwnerOnly),     Err(OwnerOnly),     y]),
            (Leave,                     [y,                 y,                  y,                  y]),
        ];
        for (act, expected) in table {
            for (actor, want) in [owner, admin, member, app].into_iter().zip(expected) {
                assert_eq!(check(actor, act), want, "{actor:?} doing {act:?}");
            }
        }
    }

    #[test]
    fn a_silenced_member_and_plain_members_of_a_muted_group_cannot_send() {
        let now = 1_000;
        assert_eq!(may_send(Role::Member, false, None, now), Ok(()));
        assert_eq!(may_send(Role::Member, false, Some(now + 1), now), Err(SendRefusal::Silenced));
        assert_eq!(may_send(Role::Member, false, Some(now), now), Ok(()), "a mute ends at its time");
        assert_eq!(may_send(Role::Member, true, None, now), Err(SendRefusal::GroupMuted));
        assert_eq!(may_send(Role::Admin, true, None, now), Ok(()));
        assert_eq!(may_send(Role::Owner, true, None, now), Ok(()));
        assert_eq!(may_send(Role::Admin, false, Some(now + 1), now), Err(SendRefusal::Silenced));
    }
}
