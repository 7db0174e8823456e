import { useState } from 'react'
import {
  DndContext,
  KeyboardSensor,
  PointerSensor,
  closestCenter,
  useDraggable,
  useDroppable,
  useSensor,
  useSensors,
  type CollisionDetection,
  type DragEndEvent,
} from '@dnd-kit/core'
import { SortableContext, arrayMove, sortableKeyboardCoordinates, useSortable, verticalListSortingStrategy } from '@dnd-kit/sortable'
import { CSS } from '@dnd-kit/utilities'
import { get, query, type Vocabulary } from '../api'
import { UserStream } from './People'
import { DateRange, PropertySelect, Select, StateView, compact, daysAgo, fmtDuration, useAsync, type Prop } from '../components'

export interface FunnelDef {
  steps: string[]
  window: string // seconds (cs)
  mode: string
  groupBy: Prop | null
  start: string
  end: string
}

export const funnelDefault = (): FunnelDef => ({ steps: [], window: String(7 * 86400), mode: 'ordered', groupBy: null, start: daysAgo(7), end: daysAgo(0) })

// A step being reordered collides with the other steps only (the zone around them would otherwise win, its
// centre being the middle step's); an event card from the palette collides with the steps and the zone.
const collision: CollisionDetection = (args) => {
  const reordering = String(args.active.id).startsWith('step:')
  const droppableContainers = reordering ? args.droppableContainers.filter((c) => String(c.id).startsWith('step:')) : args.droppableContainers
  return closestCenter({ ...args, droppableContainers })
}

export interface FunnelGroup {
  cumulative: number[]
  cumulativeRaw: number[]
  stepByStep: number[]
  medianTransTimes: number[]
  avgTransTimes: number[]
  events: string[]
  groupValue?: unknown
}

export function funnelParams(d: FunnelDef) {
  return {
    e: d.steps.map((s) => JSON.stringify({ event_type: s })),
    mode: d.mode,
    cs: d.window,
    g: d.groupBy ? (d.groupBy.type === 'user' ? d.groupBy.value : `ep:${d.groupBy.value}`) : undefined,
    start: compact(d.start),
    end: compact(d.end),
  }
}

function groupName(g: FunnelGroup, i: number): string {
  const v = g.groupValue
  if (v === undefined || v === null) return i === 0 ? 'All users' : `group ${i + 1}`
  return Array.isArray(v) ? v.join(', ') : String(v)
}

function PaletteCard({ name, onAdd }: { name: string; onAdd: () => void }) {
  const { attributes, listeners, setNodeRef, transform, isDragging } = useDraggable({ id: `palette:${name}` })
  return (
    <div
      ref={setNodeRef}
      className={`card ${isDragging ? 'dragging' : ''}`}
      style={{ transform: CSS.Translate.toString(transform) }}
      data-testid={`palette-${name}`}
      onClick={onAdd}
      title="drag into the steps (or click to add it as the last step)"
      {...listeners}
      {...attributes}
    >
      {name}
    </div>
  )
}

function StepCard({ id, name, index, onRemove }: { id: string; name: string; index: number; onRemove: () => void }) {
  const { attributes, listeners, setNodeRef, transform, transition, isDragging } = useSortable({ id })
  return (
    <div
      ref={setNodeRef}
      className={`card step ${isDragging ? 'dragging' : ''}`}
      style={{ transform: CSS.Transform.toString(transform), transition }}
      data-testid={`step-${index}`}
      {...attributes}
      {...listeners}
    >
      <span className="step-no">{index + 1}</span> {name}
      <button className="link" onPointerDown={(e) => e.stopPropagation()} onClick={onRemove} aria-label={`remove step ${index + 1}`}>
        ✕
      </button>
    </div>
  )
}

function StepsZone({ steps, onRemove }: { steps: string[]; onRemove: (i: number) => void }) {
  const { setNodeRef, isOver } = useDroppable({ id: 'steps-zone' })
  const ids = steps.map((s, i) => `step:${i}:${s}`)
  return (
    <div ref={setNodeRef} className={`steps-zone ${isOver ? 'over' : ''}`} data-testid="steps-zone">
      <SortableContext items={ids} strategy={verticalListSortingStrategy}>
        {steps.map((s, i) => (
          <StepCard key={ids[i]} id={ids[i]} name={s} index={i} onRemove={() => onRemove(i)} />
        ))}
      </SortableContext>
      {steps.length === 0 && <div className="hint">Drag events here to build the funnel’s steps.</div>}
    </div>
  )
}

export function FunnelBars({ groups, onStep }: { groups: FunnelGroup[]; onStep?: (group: number, step: number) => void }) {
  return (
    <div className="funnel-groups">
      {groups.map((g, gi) => (
        <div className="funnel" key={gi} data-testid={`funnel-group-${gi}`}>
          {groups.length > 1 && <h3>{groupName(g, gi)}</h3>}
          {g.events.map((ev, si) => {
            const pct = (g.cumulative[si] ?? 0) * 100
            return (
              <button
                className="funnel-step"
                key={si}
                onClick={() => onStep?.(gi, si)}
                data-testid={`funnel-bar-${gi}-${si}`}
                title="list this step’s users"
              >
                <span className="funnel-label">
                  {si + 1}. {ev}
                </span>
                <span className="bar-track">
                  <span className="bar" style={{ width: `${Math.max(pct, 0.5)}%` }} />
                </span>
                <span className="funnel-nums">
                  <b data-testid={`funnel-count-${gi}-${si}`}>{g.cumulativeRaw[si]}</b> users ·{' '}
                  <span data-testid={`funnel-pct-${gi}-${si}`}>{pct.toFixed(1)}%</span>
                  {si > 0 && (
                    <>
                      {' '}
                      · median <span data-testid={`funnel-median-${gi}-${si}`}>{fmtDuration(g.medianTransTimes[si])}</span>
                    </>
                  )}
                </span>
              </button>
            )
          })}
        </div>
      ))}
    </div>
  )
}

function StepUsers({ def, step, onClose }: { def: FunnelDef; step: number; onClose: () => void }) {
  const params = { ...funnelParams(def), step: String(step + 1) }
  const users = useAsync<{ users: string[]; total: number }>(JSON.stringify(params), () => get('/api/web/funnel-users', params))
  const [user, setUser] = useState<string | null>(null)
  return (
    <>
      <aside className="panel" data-testid="step-users">
        <header>
          <h3>Users who reached step {step + 1}</h3>
          <button className="link" onClick={onClose}>
            close
          </button>
        </header>
        <StateView value={users} isEmpty={(u) => u.users.length === 0} empty="No users reached this step.">
          {(u) => (
            <>
              {u.total > u.users.length && (
                <p className="hint" data-testid="step-users-more">
                  the first {u.users.length} of {u.total}
                </p>
              )}
              <ul className="user-list">
                {u.users.map((id) => (
                  <li key={id}>
                    <button className={`link ${user === id ? 'active' : ''}`} onClick={() => setUser(id)} data-testid="step-user">
                      {id}
                    </button>
                  </li>
                ))}
              </ul>
            </>
          )}
        </StateView>
      </aside>
      {user && (
        <section className="step-stream" data-testid="step-user-stream">
          <h3>
            Events of {user}{' '}
            <a href={`#/people?u=${encodeURIComponent(user)}`} data-testid="open-user">
              open in user activity
            </a>
          </h3>
          <UserStream user={user} />
        </section>
      )}
    </>
  )
}

export function FunnelView({ def, onStep }: { def: FunnelDef; onStep?: (step: number) => void }) {
  const params = def.steps.length >= 2 ? funnelParams(def) : null
  const value = useAsync<FunnelGroup[]>(params && query(params), async () => (await get<{ data: FunnelGroup[] }>('/api/2/funnels', params!)).data)
  return (
    <StateView
      value={value}
      isEmpty={(g) => g.length === 0 || g.every((x) => !x.cumulativeRaw?.[0])}
      idle="Drag at least two events into the steps."
      empty="No user entered this funnel in the range."
    >
      {(groups) => <FunnelBars groups={groups} onStep={onStep && ((_, s) => onStep(s))} />}
    </StateView>
  )
}

export default function Funnel({ def, setDef, vocab }: { def: FunnelDef; setDef: (d: FunnelDef) => void; vocab: Vocabulary | null }) {
  const sensors = useSensors(
    useSensor(PointerSensor, { activationConstraint: { distance: 4 } }),
    useSensor(KeyboardSensor, { coordinateGetter: sortableKeyboardCoordinates }),
  )
  const [openStep, setOpenStep] = useState<number | null>(null)
  const set = (patch: Partial<FunnelDef>) => setDef({ ...def, ...patch })
  const onDragEnd = (e: DragEndEvent) => {
    const active = String(e.active.id)
    const over = e.over ? String(e.over.id) : null
    if (!over) return
    const overIndex = over.startsWith('step:') ? Number(over.split(':')[1]) : def.steps.length
    if (active.startsWith('palette:')) {
      if (def.steps.length >= 10) return
      const steps = [...def.steps]
      steps.splice(over.startsWith('step:') ? overIndex + 1 : steps.length, 0, active.slice('palette:'.length))
      set({ steps })
    } else if (active.startsWith('step:')) {
      const from = Number(active.split(':')[1])
      if (from !== overIndex && over.startsWith('step:')) set({ steps: arrayMove(def.steps, from, overIndex) })
    }
  }

  return (
    <section className="page" data-testid="page-funnel">
      <h1>Funnel</h1>
      <DndContext sensors={sensors} collisionDetection={collision} onDragEnd={onDragEnd}>
        <div className="funnel-builder">
          <div className="palette" data-testid="palette">
            <h4>Events</h4>
            {(vocab?.event_types ?? []).map((e) => (
              <PaletteCard key={e.name} name={e.name} onAdd={() => def.steps.length < 10 && set({ steps: [...def.steps, e.name] })} />
            ))}
            {vocab && vocab.event_types.length === 0 && <div className="hint">This project has no events yet.</div>}
          </div>
          <div>
            <h4>Steps</h4>
            <StepsZone steps={def.steps} onRemove={(i) => set({ steps: def.steps.filter((_, j) => j !== i) })} />
          </div>
        </div>
      </DndContext>
      <div className="controls">
        <Select
          label="conversion window"
          value={def.window}
          testId="funnel-window"
          onChange={(window) => set({ window })}
          options={[
            ['3600', '1 hour'],
            ['86400', '1 day'],
            [String(7 * 86400), '7 days'],
            [String(30 * 86400), '30 days'],
          ]}
        />
        <Select
          label="order"
          value={def.mode}
          testId="funnel-mode"
          onChange={(mode) => set({ mode })}
          options={[
            ['ordered', 'This order'],
            ['unordered', 'Any order'],
            ['sequential', 'Exact order'],
          ]}
        />
        <PropertySelect vocab={vocab} label="group by" value={def.groupBy} onChange={(groupBy) => set({ groupBy })} />
        <DateRange start={def.start} end={def.end} onChange={(start, end) => set({ start, end })} />
      </div>
      <div className="funnel-result">
        <FunnelView def={def} onStep={setOpenStep} />
        {openStep !== null && <StepUsers def={def} step={openStep} onClose={() => setOpenStep(null)} />}
      </div>
    </section>
  )
}
