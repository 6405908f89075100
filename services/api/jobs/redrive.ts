/**
 * Sending a dead letter again. A request of one of our jobs puts the job back to `queued` and goes through the
 * outbox; anything else well-formed (an update, a result, a request of no job here, so nothing for the outbox to
 * hold) goes straight back to its queue. A malformed message would only die again: refused.
 */
import { ApiError } from '../http/errors.ts'
import type { DeadLetter, DeadLetterRepo } from '../store/dead-letters.ts'
import type { Broker } from './broker.ts'
import type { Outbox } from './outbox.ts'

export interface RedriveDeps {
  deadLetters: Pick<DeadLetterRepo, 'redrive' | 'remove'>
  outbox: Pick<Outbox, 'relay'>
  broker: Pick<Broker, 'publish'>
}

/** What a re-drive did: the letter sent again, and the job and media it put back in line, when it was a request of ours. */
export type Redriven = { redriven: string; jobId: string | null; mediaId?: string }

export async function redriveLetter(deps: RedriveDeps, letter: DeadLetter): Promise<Redriven> {
  if (letter.problem) {
    throw new ApiError(
      422,
      'unprocessable',
      `the message is malformed (${letter.problem}); re-driving it would fail again. Discard it instead.`
    )
  }
  if (/\.(request|bulk)$/.test(letter.queue) && letter.jobId) {
    const outcome = await deps.deadLetters.redrive(letter.id, crypto.randomUUID())
    if (outcome && 'conflict' in outcome)
      throw new ApiError(
        409,
        'conflict',
        `job ${letter.jobId} is ${outcome.conflict} meanwhile; there is nothing to re-drive`
      )
    if (outcome) {
      void deps.outbox.relay()
      return { redriven: letter.id, jobId: letter.jobId, mediaId: outcome.mediaId }
    }
  }
  try {
    await deps.broker.publish(letter.queue, letter.body, {
      correlationId: letter.jobId ?? letter.id,
      type: 'redriven',
      messageId: crypto.randomUUID(),
    })
  } catch (error) {
    throw new ApiError(
      503,
      'queue_unavailable',
      `the message could not be sent again (${(error as Error).message}); try again shortly`
    )
  }
  await deps.deadLetters.remove(letter.id)
  return { redriven: letter.id, jobId: letter.jobId }
}
