//! How an answered call ends on a BYE. A mirror shows what was sent, not what
//! was accepted: a BYE that does not name the answered dialog (a third party's,
//! one without a To tag) or that the far end refuses with 481 ends nothing.
//!
//! The rule (docs/events.md, "When a BYE ends an answered call"): a BYE ends a call
//! only when it matches the answered dialog, its Call-ID and both tags. Its 2xx
//! ends the call at the BYE; with no answer seen, the call ends at the BYE once
//! `challenge_window` has passed, unless a 481 came first.

use super::dialog::{Call, End, PendingBye, Phase, Step};
use super::event::{Disposition, EndedBy};
use super::settings::TrackerConfig;
use crate::sip::SipMessage;
use crate::vocab::Timestamp;

impl Call {
    pub(super) fn on_bye(
        &mut self,
        msg: &SipMessage,
        by_caller: bool,
        now: Timestamp,
        cfg: &TrackerConfig,
    ) -> Step {
        let ended_by = if by_caller {
            EndedBy::Caller
        } else {
            EndedBy::Callee
        };
        if self.phase != Phase::Answered {
            // A BYE in an early dialog: nothing was answered for a 481 to keep.
            let disposition = if by_caller {
                Disposition::Cancelled
            } else {
                Disposition::Failed
            };
            return Step::End(End::new(disposition, None, ended_by, Some(msg)));
        }
        // The caller's side of the key already matched (the tracker found the call
        // by it); the far side must be the answered dialog's, not a stray fork's
        // or a BYE that names none.
        let peer_tag = if by_caller {
            &msg.to.tag
        } else {
            &msg.from.tag
        };
        if *peer_tag != self.info.to.tag {
            return Step::Nothing;
        }
        if let Some(b) = self.bye.as_mut() {
            let sides = b.byes.len();
            match b.byes.iter_mut().find(|(_, tag)| *tag == msg.from.tag) {
                // The same side's BYE again with a new CSeq (after a 401/407):
                // its answer is the one to wait for.
                Some(same) => same.0 = msg.cseq,
                // The other side hung up too (crossed BYEs): either's 2xx ends
                // the call, at the first BYE.
                None if sides < 2 => b.byes.push((msg.cseq, msg.from.tag.clone())),
                None => {}
            }
            return Step::Nothing;
        }
        let mut end = End::new(
            Disposition::Answered,
            self.answer_status,
            ended_by,
            Some(msg),
        );
        end.ended_at = Some(now);
        self.bye = Some(Box::new(PendingBye {
            byes: vec![(msg.cseq, msg.from.tag.clone())],
            end,
        }));
        self.deadline = now.plus(cfg.challenge_window);
        // Many transferors hang up without waiting for the NOTIFY: the accepted
        // transfer goes out now, before the ending.
        match self.refers.iter().position(|r| r.accepted) {
            Some(idx) => Step::Transferred(self.refers.remove(idx)),
            None => Step::Rearm,
        }
    }

    pub(super) fn on_bye_response(
        &mut self,
        msg: &SipMessage,
        status: u16,
        now: Timestamp,
        cfg: &TrackerConfig,
    ) -> Step {
        let Some(b) = self.bye.as_mut() else {
            return self.on_bye_answer_alone(msg, status);
        };
        let Some(idx) = b
            .byes
            .iter()
            .position(|(cseq, tag)| *cseq == msg.cseq && *tag == msg.from.tag)
        else {
            return Step::Nothing;
        };
        match status {
            200..=299 => match self.bye.take() {
                Some(b) => Step::End(b.end),
                None => Step::Nothing,
            },
            481 => {
                // The far end has no such dialog: this BYE ended nothing. With
                // none left waiting the call goes on, its timers from now.
                b.byes.remove(idx);
                if !b.byes.is_empty() {
                    return Step::Nothing;
                }
                self.bye = None;
                self.arm_answered(now, cfg);
                Step::Rearm
            }
            // A challenge (retried with a new CSeq) or any other answer: the
            // deadline decides.
            _ => Step::Nothing,
        }
    }

    /// A 2xx to a BYE this call did not see (the mirror lost it, or siphook
    /// restarted while it waited): the answered dialog's own BYE was accepted, so
    /// the call ends now.
    fn on_bye_answer_alone(&mut self, msg: &SipMessage, status: u16) -> Step {
        if self.phase != Phase::Answered || !(200..300).contains(&status) {
            return Step::Nothing;
        }
        let (caller, callee) = (&self.info.from.tag, &self.info.to.tag);
        let ended_by = if msg.from.tag == *caller && msg.to.tag == *callee {
            EndedBy::Caller
        } else if msg.from.tag == *callee && msg.to.tag == *caller {
            EndedBy::Callee
        } else {
            return Step::Nothing;
        };
        Step::End(End::new(
            Disposition::Answered,
            self.answer_status,
            ended_by,
            None,
        ))
    }

    /// The deadline passed with a BYE waiting: unrefused, it ended the call.
    pub(super) fn take_pending_bye(&mut self) -> Option<End> {
        self.bye.take().map(|b| b.end)
    }
}
