/** Which class a new job is (services/api/jobs/priority.ts): pure rules, no broker. */
import { describe, expect, test } from 'bun:test'
import { CLASS_PRIORITY, classOfQueue, queueNames, queueOfClass, requestQueue } from '@app/shared'
import { askedClass, classFor } from '../../services/api/jobs/priority.ts'

describe('job classes', () => {
  test('a bulk key makes every job bulk, whatever is asked; otherwise what is asked, or nothing', () => {
    expect(askedClass('interactive', 'bulk')).toBe('bulk')
    expect(askedClass(undefined, 'bulk')).toBe('bulk')
    expect(askedClass('bulk', 'interactive')).toBe('bulk')
    expect(askedClass('interactive', 'interactive')).toBe('interactive')
    expect(askedClass(undefined, 'interactive')).toBeNull()
  })

  test('a tenant past its fair share of waiting jobs gets bulk, even when it asks for interactive; 0 turns it off', () => {
    expect(classFor(null, 0, 3)).toBe('interactive')
    expect(classFor(null, 3, 3)).toBe('interactive')
    expect(classFor(null, 4, 3)).toBe('bulk')
    expect(classFor('interactive', 4, 3)).toBe('bulk')
    expect(classFor('bulk', 0, 3)).toBe('bulk')
    expect(classFor(null, 1_000_000, 0)).toBe('interactive')
  })

  test('each class has its queue and its AMQP priority, and a queue name says its class', () => {
    const names = queueNames('acme', 'videos')
    expect(requestQueue(names, 'interactive')).toBe('acme.media.videos.request')
    expect(requestQueue(names, 'bulk')).toBe('acme.media.videos.bulk')
    expect(classOfQueue(names.bulk)).toBe('bulk')
    expect(classOfQueue(names.request)).toBe('interactive')
    expect(queueOfClass(names.request, 'bulk')).toBe(names.bulk)
    expect(queueOfClass(names.bulk, 'interactive')).toBe(names.request)
    expect(queueOfClass(names.bulk, 'bulk')).toBe(names.bulk)
    // RabbitMQ 4 treats priorities above 4 as high.
    expect(CLASS_PRIORITY.interactive).toBeGreaterThan(4)
    expect(CLASS_PRIORITY.bulk).toBeLessThanOrEqual(4)
  })
})
