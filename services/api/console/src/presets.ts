/**
 * Which presets this tab uploads with: the tenant's defaults (nothing is sent) until the person picks others on the
 * page. An upload sends every name picked; the API makes those of the file's kind, so the picker keeps one video and
 * one audio preset picked beside the image ones.
 */
import { api, read } from './api.ts'
import { h } from './dom.ts'

interface Preset {
  name: string
  kind: Kind
  builtIn: boolean
}
type Kind = 'image' | 'video' | 'audio'
interface PresetList {
  presets: Preset[]
  defaults: Record<Kind, string[]>
}
const KINDS: [Kind, string][] = [
  ['image', 'Images:'],
  ['video', 'Videos:'],
  ['audio', 'Sound:'],
]

/** The names picked, or null while they are the defaults. */
let picked: string[] | null = null

/** The presets to upload with now: null for the tenant's defaults. */
export const chosenPresets = (): string[] | null => picked

/** A fieldset to pick presets with, filled once the tenant's presets are read; empty if they cannot be. */
export function presetPicker(): HTMLElement {
  const fieldset = h('fieldset', { class: 'presets' }, h('legend', null, 'Make'))
  void api.v1.presets
    .$get()
    .then((res) => read<PresetList>(res))
    .then(
      ({ presets, defaults }) => {
        const boxes: HTMLInputElement[] = []
        const update = () => {
          const names = boxes.filter((b) => b.checked).map((b) => b.value)
          const wanted = KINDS.flatMap(([kind]) => defaults[kind] ?? [])
          const same = names.length === wanted.length && names.every((n) => wanted.includes(n))
          picked = same ? null : names
        }
        for (const [kind, label] of KINDS) {
          const group = h('div', { class: 'preset-group' }, h('span', { class: 'preset-kind' }, label))
          for (const preset of presets.filter((p) => p.kind === kind)) {
            const id = `preset-${preset.name}`
            // A video or a sound takes one preset; images take any number.
            const box = h('input', {
              type: kind === 'image' ? 'checkbox' : 'radio',
              name: kind === 'image' ? id : `${kind}-preset`,
              id,
              value: preset.name,
              checked: (defaults[kind] ?? []).includes(preset.name),
            })
            box.addEventListener('change', update)
            boxes.push(box)
            group.append(h('label', { for: id, class: 'preset' }, box, preset.name))
          }
          fieldset.append(group)
        }
        update()
      },
      () => fieldset.replaceChildren()
    )
  return fieldset
}
