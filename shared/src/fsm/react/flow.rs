//! What follows from any applied input: scheduling the tasks whose
//! dependencies are met (and skipping the ones that can no longer run or that
//! a decision did not choose), starting and completing groups, starting
//! `wait` tasks, completing the workflow, failing it — through saga
//! compensation when completed tasks declared one — and retries.

use crate::data::{DataMap, WorkflowData};
use crate::event::WorkflowEventType as T;
use crate::fsm::evolve::is_timeout_error;
use crate::fsm::meta;
use crate::fsm::timer::{encode_timers, Timer, TimerKind};
use crate::model::{DependencyCondition, ErrorInfo, TaskConfiguration, TaskType};
use crate::state::{TaskState, WorkflowState};

use super::plan::{is_group, wait_duration_ms, wait_signal};
use super::{error_fields, Run};

/// Whether a task can start.
enum Deps {
    Met,
    Waiting,
    /// A dependency ended in a way that rules this task out.
    Broken(String),
    /// A decision upstream chose other branches.
    NotChosen(String),
}

impl Run<'_> {
    /// Whether new work may start (not paused, compensating or finished).
    fn may_schedule(&self) -> bool {
        matches!(
            self.state.state,
            WorkflowState::Running | WorkflowState::Retrying | WorkflowState::WaitingForDependency
        )
    }

    /// Schedules every pending task whose dependencies are met, skips those
    /// that can no longer run, completes finished groups, until nothing changes;
    /// then completes the workflow if everything is done.
    pub(super) fn schedule_ready(&mut self) {
        loop {
            if !self.may_schedule() {
                return;
            }
            let mut changed = false;
            for task in self.tasks() {
                let state = self.state.task_state(&task.name);
                if state == TaskState::Running && is_group(task) {
                    changed |= self.settle_group(task);
                    continue;
                }
                if state != TaskState::Pending || self.plan.is_compensation(&task.name) {
                    continue;
                }
                match self.deps_status(task) {
                    Deps::Waiting => continue,
                    Deps::Met => {
                        if !task.dependencies.is_empty() {
                            self.emit(
                                T::DependencyResolved,
                                Some((&task.name, 0)),
                                DataMap::new(),
                                &[],
                            );
                        }
                        self.begin(task);
                    }
                    Deps::Broken(dep) => {
                        let mut data = DataMap::new();
                        data.insert("dependency".into(), dep.into());
                        self.emit(T::DependencyFailed, Some((&task.name, 0)), data, &[]);
                        self.emit(T::TaskSkipped, Some((&task.name, 0)), DataMap::new(), &[]);
                    }
                    Deps::NotChosen(decision) => {
                        let mut data = DataMap::new();
                        data.insert(
                            "reason".into(),
                            format!("not chosen by decision '{decision}'").into(),
                        );
                        self.emit(T::TaskSkipped, Some((&task.name, 0)), data, &[]);
                    }
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
        self.complete_if_done();
    }

    /// Starts a task whose dependencies are met, by its type.
    fn begin(&mut self, task: &TaskConfiguration) {
        match task.task_type {
            TaskType::Parallel | TaskType::Sequential => {
                // A group is a sub-state machine: it runs while its members do.
                self.emit(T::TaskScheduled, Some((&task.name, 1)), DataMap::new(), &[]);
                self.emit(
                    T::StateTransitioned,
                    Some((&task.name, 1)),
                    DataMap::new(),
                    &[(meta::TO, TaskState::Running.as_str().to_owned())],
                );
            }
            TaskType::Wait => self.begin_wait(task),
            _ => self.schedule(task, 1),
        }
    }

    /// A `wait` task waits for its signal (taken at once if it already came)
    /// and/or its duration, as a durable timer.
    fn begin_wait(&mut self, task: &TaskConfiguration) {
        let mut extra = vec![(
            meta::TO,
            TaskState::WaitingForDependency.as_str().to_owned(),
        )];
        if let Some(ms) = wait_duration_ms(task) {
            let t = Timer::task(TimerKind::Wait, &task.name, 1, self.now() + ms as i64);
            extra.push((meta::TIMERS, encode_timers(&[t])));
        }
        self.emit(
            T::StateTransitioned,
            Some((&task.name, 1)),
            DataMap::new(),
            &extra,
        );
        if let Some(signal) = wait_signal(task) {
            if let Some(data) = self.state.signals.get(signal).cloned() {
                self.emit(
                    T::TaskCompleted,
                    Some((&task.name, 1)),
                    data,
                    &[(meta::SIGNAL, signal.to_owned())],
                );
            }
        }
    }

    /// Completes a running group whose members are all done; true if it did.
    fn settle_group(&mut self, group: &TaskConfiguration) -> bool {
        let done = self.plan.members(&group.name).iter().all(|m| {
            matches!(
                self.state.task_state(m),
                TaskState::Completed | TaskState::Skipped
            )
        });
        if done {
            self.emit(
                T::TaskCompleted,
                Some((&group.name, 1)),
                DataMap::new(),
                &[],
            );
        }
        done
    }

    fn deps_status(&self, task: &TaskConfiguration) -> Deps {
        let mut waiting = false;
        if let Some(group) = self.plan.group_of(&task.name) {
            match self.state.task_state(group) {
                TaskState::Running => {}
                s if s.is_terminal() => return Deps::Broken(group.to_owned()),
                _ => waiting = true,
            }
            let sequential =
                self.task_config(group).map(|g| g.task_type) == Some(TaskType::Sequential);
            if sequential {
                let members = self.plan.members(group);
                if let Some(i) = members.iter().position(|m| *m == task.name) {
                    if i > 0 {
                        let prev = self.state.task_state(members[i - 1]);
                        if !matches!(prev, TaskState::Completed | TaskState::Skipped) {
                            if prev.is_terminal() {
                                return Deps::Broken(members[i - 1].to_owned());
                            }
                            waiting = true;
                        }
                    }
                }
            }
        }
        for dep in &task.dependencies {
            let rt = self.state.task(&dep.task_name);
            let s = rt.state;
            let ok = match dep.condition {
                DependencyCondition::Completed => s == TaskState::Completed,
                DependencyCondition::Finished => s.is_terminal(),
                DependencyCondition::Failed => s == TaskState::Failed,
            };
            if ok {
                if s == TaskState::Completed && self.is_decision(&dep.task_name) {
                    let chosen = match rt.output.as_ref().and_then(|o| o.get("branches")) {
                        Some(WorkflowData::List(b)) => b.contains(&task.name),
                        Some(WorkflowData::Str(b)) => *b == task.name,
                        _ => false,
                    };
                    if !chosen {
                        return Deps::NotChosen(dep.task_name.clone());
                    }
                }
                continue;
            }
            if s.is_terminal() {
                return Deps::Broken(dep.task_name.clone());
            }
            waiting = true;
        }
        if waiting {
            Deps::Waiting
        } else {
            Deps::Met
        }
    }

    fn is_decision(&self, task: &str) -> bool {
        self.task_config(task).map(|t| t.task_type) == Some(TaskType::Decision)
    }

    /// Completes the workflow once every task is completed or skipped.
    fn complete_if_done(&mut self) {
        if self.state.state != WorkflowState::Running || self.tasks().is_empty() {
            return;
        }
        let done = self.tasks().iter().all(|t| {
            self.plan.is_compensation(&t.name)
                || matches!(
                    self.state.task_state(&t.name),
                    TaskState::Completed | TaskState::Skipped
                )
        });
        if done {
            self.emit(T::WorkflowCompleted, None, DataMap::new(), &[]);
        }
    }

    /// What follows a failed attempt whose `task.failed` was just applied:
    /// nothing yet when a retry waits on its backoff timer, the next attempt
    /// at once without backoff, else the task's groups and the workflow fail.
    pub(super) fn after_failure(
        &mut self,
        task: &TaskConfiguration,
        attempt: u32,
        err: &ErrorInfo,
        delay_ms: u64,
    ) {
        if self.state.task_state(&task.name) == TaskState::Retrying {
            if self.state.state == WorkflowState::Running {
                let extra = [(meta::RETRY_DELAY_MS, delay_ms.to_string())];
                self.emit(
                    T::WorkflowRetrying,
                    Some((&task.name, attempt + 1)),
                    DataMap::new(),
                    &extra,
                );
            }
            if delay_ms == 0 && self.state.state != WorkflowState::Paused {
                self.schedule(task, attempt + 1);
            }
            return;
        }
        if self.state.state == WorkflowState::Compensating {
            self.advance_compensation();
            return;
        }
        for group in self.plan.ancestors(&task.name) {
            if !self.state.task_state(group).is_terminal() {
                let message = format!("member '{}' failed: {}", task.name, err.message);
                self.emit(
                    T::TaskFailed,
                    Some((group, 1)),
                    error_fields("member_failed", &message, false),
                    &[],
                );
            }
        }
        let kind = if is_timeout_error(&err.error_type) {
            "timed out"
        } else {
            "failed"
        };
        let message = format!(
            "task '{}' {kind} after {attempt} attempt(s): {}",
            task.name, err.message
        );
        self.fail(&err.error_type, &message, Some(&task.name));
    }

    /// Ends the workflow as failed, or — when completed tasks declared
    /// compensations — starts compensating them in reverse completion order.
    pub(super) fn fail(&mut self, error_type: &str, message: &str, task: Option<&str>) {
        self.close_open_tasks("workflow failed");
        let mut done: Vec<(u64, &str, &str)> = self
            .tasks()
            .iter()
            .filter_map(|t| {
                let comp = t.compensation.as_deref()?;
                let rt = self.state.tasks.get(&t.name)?;
                (rt.state == TaskState::Completed).then_some((
                    rt.completed_seq,
                    t.name.as_str(),
                    comp,
                ))
            })
            .collect();
        let mut data = error_fields(error_type, message, false);
        let extra: Vec<(&str, String)> = task
            .map(|t| (meta::TASK, t.to_owned()))
            .into_iter()
            .collect();
        if done.is_empty() || self.state.state.is_terminal() {
            self.emit(T::WorkflowFailed, None, data, &extra);
            return;
        }
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        let plan = done.iter().map(|(_, t, c)| format!("{t}>{c}")).collect();
        data.insert("plan".into(), WorkflowData::List(plan));
        let mut extra = extra;
        let cleanup = self
            .def
            .map(|d| d.timeout_config.cleanup_timeout_ms)
            .unwrap_or(0);
        if cleanup > 0 {
            let t = Timer::workflow(TimerKind::Cleanup, self.now() + cleanup as i64);
            extra.push((meta::TIMERS, encode_timers(&[t])));
        }
        self.emit(T::CompensationStarted, None, data, &extra);
        self.advance_compensation();
    }

    /// Runs the next compensation of the log, or ends the saga: `compensated`
    /// when all succeeded, `failed` when one failed for good.
    pub(super) fn advance_compensation(&mut self) {
        if self.state.state != WorkflowState::Compensating {
            return;
        }
        for c in self.state.compensations.clone() {
            match self.state.task_state(&c.compensation_task) {
                TaskState::Completed => continue,
                TaskState::Pending => {
                    if let Some(cfg) = self.task_config(&c.compensation_task) {
                        self.schedule(cfg, 1);
                    }
                    return;
                }
                s if s.is_terminal() => {
                    let message = format!(
                        "compensation '{}' of task '{}' ended {s}",
                        c.compensation_task, c.task_name
                    );
                    let data = error_fields("compensation_failed", &message, false);
                    self.emit(
                        T::CompensationFailed,
                        Some((&c.compensation_task, c.attempt)),
                        data,
                        &[],
                    );
                    return;
                }
                _ => return,
            }
        }
        self.emit(T::CompensationCompleted, None, DataMap::new(), &[]);
    }

    /// Cancels running attempts (telling their workers) and skips tasks that
    /// never ran; compensation tasks stay pending for a saga.
    pub(super) fn close_open_tasks(&mut self, reason: &str) {
        for task in self.tasks() {
            let rt = self.state.task(&task.name);
            match rt.state {
                TaskState::Pending if self.plan.is_compensation(&task.name) => {}
                TaskState::Pending => {
                    self.emit(
                        T::TaskSkipped,
                        Some((&task.name, rt.attempt)),
                        DataMap::new(),
                        &[],
                    );
                }
                s if !s.is_terminal() => {
                    if matches!(s, TaskState::Scheduled | TaskState::Running) && !is_group(task) {
                        self.cancel_attempt(&task.name, rt.attempt, reason);
                    }
                    self.emit(
                        T::TaskCancelled,
                        Some((&task.name, rt.attempt)),
                        DataMap::new(),
                        &[],
                    );
                }
                _ => {}
            }
        }
    }

    /// After `workflow.resumed`: retries whose backoff ended while paused start now.
    pub(super) fn resume_retries(&mut self) {
        for task in self.tasks() {
            let rt = self.state.task(&task.name);
            let waiting = self.state.timers.values().any(|t| {
                t.kind == TimerKind::Retry && t.task.as_deref() == Some(task.name.as_str())
            });
            if rt.state == TaskState::Retrying && !waiting {
                self.schedule(task, rt.attempt + 1);
            }
        }
    }
}
