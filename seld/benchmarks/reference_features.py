"""The public baselines' feature extraction, transcribed: the yardstick of `seld bench features`
and the independent reference the tests check our front ends against.

Written from what the files compute, not copied and not tuned: the same operations, in the
same order, with the same libraries (numpy, librosa) and the same dtypes (float64 audio,
complex128 spectra), one file at a time.

- ``Dcase2023Features``: sharathadavanne/seld-dcase2023, ``cls_feature_class.py``
  (``FeatureClass._spectrogram``, ``_get_mel_spectrogram``, ``_get_foa_intensity_vectors``,
  ``_get_gcc``, ``_get_salsalite``, ``extract_file_feature``) with ``parameters.py``'s
  defaults: fs 24 kHz, hop 20 ms, window 2 hops in the next power-of-two FFT, 64 mel bands,
  SALSA-lite 50 Hz-2 kHz (phase) and up to 9 kHz (spectra). Audio is read as int16 / 32768
  plus eps = 1e-8; features come out as [frames, feature_channels * bins], channel-major.
- ``seldnet_stft``: sharathadavanne/seld-net, ``cls_feature_class.py``
  (``FeatureClass._spectrogram`` and the ``abs`` / ``angle`` split of ``preprocess_features``):
  a Python loop over frames, a symmetric ``np.hanning`` window, ``np.fft.fft(norm="ortho")``
  keeping ``nfft / 2`` bins, frames only where the whole window fits. Its own parameters were
  44.1 kHz with window = nfft, hop nfft / 2; here it runs at the DCASE framing (hop 480,
  window 960, FFT 1024) so that it does the same amount of work as our ``stft`` front end.

librosa is needed (the test extra); numpy 2 removed ``np.int`` / ``np.float``, which the
baseline used for plain casts, so those are ``int`` / ``float`` here.
"""

from __future__ import annotations

import math

import numpy as np


def _ncr(n: int, r: int) -> int:
    return math.factorial(n) // math.factorial(r) // math.factorial(n - r)


class Dcase2023Features:
    """The DCASE 2023 task 3 baseline's per-file feature extraction (dataset "foa" or "mic")."""

    def __init__(
        self,
        dataset: str = "foa",
        use_salsalite: bool = False,
        fs: int = 24_000,
        hop_len_s: float = 0.02,
        nb_mel_bins: int = 64,
        fmin_doa_salsalite: float = 50,
        fmax_doa_salsalite: float = 2000,
        fmax_spectra_salsalite: float = 9000,
        nb_channels: int = 4,
    ):
        import librosa

        self._librosa = librosa
        self._dataset = dataset
        self._use_salsalite = use_salsalite
        self._fs = fs
        self._hop_len = int(fs * hop_len_s)
        self._win_len = 2 * self._hop_len
        self._nfft = 2 ** (self._win_len - 1).bit_length()
        self._eps = 1e-8
        self._nb_channels = nb_channels
        if use_salsalite and dataset == "mic":
            self._lower_bin = int(np.floor(fmin_doa_salsalite * self._nfft / float(fs)))
            self._lower_bin = np.max((1, self._lower_bin))
            self._upper_bin = int(np.floor(np.min((fmax_doa_salsalite, fs // 2)) * self._nfft / float(fs)))
            c = 343
            self._delta = 2 * np.pi * fs / (self._nfft * c)
            self._freq_vector = np.arange(self._nfft // 2 + 1)
            self._freq_vector[0] = 1
            self._freq_vector = self._freq_vector[None, :, None]
            self._cutoff_bin = int(np.floor(fmax_spectra_salsalite * self._nfft / float(fs)))
            assert self._upper_bin <= self._cutoff_bin
            self._nb_mel_bins = self._cutoff_bin - self._lower_bin
        else:
            self._nb_mel_bins = nb_mel_bins
            self._mel_wts = librosa.filters.mel(sr=fs, n_fft=self._nfft, n_mels=nb_mel_bins).T

    def load_audio(self, pcm16: np.ndarray) -> np.ndarray:
        """`_load_audio` after `wav.read`: int16 [samples, channels] -> float64 plus eps."""
        return pcm16[:, : self._nb_channels] / 32768.0 + self._eps

    def spectrogram(self, audio_input: np.ndarray, nb_frames: int) -> np.ndarray:
        """complex128 [frames, bins, channels]: librosa.stft, center=True, per channel."""
        spectra = []
        for ch_cnt in range(audio_input.shape[1]):
            stft_ch = self._librosa.core.stft(
                np.asfortranarray(audio_input[:, ch_cnt]), n_fft=self._nfft, hop_length=self._hop_len,
                win_length=self._win_len, window="hann")
            spectra.append(stft_ch[:, :nb_frames])
        return np.array(spectra).T

    def mel_spectrogram(self, linear_spectra: np.ndarray) -> np.ndarray:
        mel_feat = np.zeros((linear_spectra.shape[0], self._nb_mel_bins, linear_spectra.shape[-1]))
        for ch_cnt in range(linear_spectra.shape[-1]):
            mag_spectra = np.abs(linear_spectra[:, :, ch_cnt]) ** 2
            mel_spectra = np.dot(mag_spectra, self._mel_wts)
            log_mel_spectra = self._librosa.power_to_db(mel_spectra)
            mel_feat[:, :, ch_cnt] = log_mel_spectra
        return mel_feat.transpose((0, 2, 1)).reshape((linear_spectra.shape[0], -1))

    def foa_intensity_vectors(self, linear_spectra: np.ndarray) -> np.ndarray:
        W = linear_spectra[:, :, 0]
        I = np.real(np.conj(W)[:, :, np.newaxis] * linear_spectra[:, :, 1:])  # noqa: E741
        E = self._eps + (np.abs(W) ** 2 + ((np.abs(linear_spectra[:, :, 1:]) ** 2).sum(-1)) / 3.0)
        I_norm = I / E[:, :, np.newaxis]
        I_norm_mel = np.transpose(np.dot(np.transpose(I_norm, (0, 2, 1)), self._mel_wts), (0, 2, 1))
        foa_iv = I_norm_mel.transpose((0, 2, 1)).reshape((linear_spectra.shape[0], self._nb_mel_bins * 3))
        if np.isnan(foa_iv).any():
            raise ValueError("Feature extraction is generating nan outputs")
        return foa_iv

    def gcc(self, linear_spectra: np.ndarray) -> np.ndarray:
        gcc_channels = _ncr(linear_spectra.shape[-1], 2)
        gcc_feat = np.zeros((linear_spectra.shape[0], self._nb_mel_bins, gcc_channels))
        cnt = 0
        for m in range(linear_spectra.shape[-1]):
            for n in range(m + 1, linear_spectra.shape[-1]):
                R = np.conj(linear_spectra[:, :, m]) * linear_spectra[:, :, n]
                cc = np.fft.irfft(np.exp(1.0j * np.angle(R)))
                cc = np.concatenate((cc[:, -self._nb_mel_bins // 2:], cc[:, : self._nb_mel_bins // 2]), axis=-1)
                gcc_feat[:, :, cnt] = cc
                cnt += 1
        return gcc_feat.transpose((0, 2, 1)).reshape((linear_spectra.shape[0], -1))

    def salsalite(self, linear_spectra: np.ndarray) -> np.ndarray:
        phase_vector = np.angle(linear_spectra[:, :, 1:] * np.conj(linear_spectra[:, :, 0, None]))
        phase_vector = phase_vector / (self._delta * self._freq_vector)
        phase_vector = phase_vector[:, self._lower_bin:self._cutoff_bin, :]
        phase_vector[:, self._upper_bin:, :] = 0
        phase_vector = phase_vector.transpose((0, 2, 1)).reshape((phase_vector.shape[0], -1))
        linear_spectra = np.abs(linear_spectra) ** 2
        for ch_cnt in range(linear_spectra.shape[-1]):
            linear_spectra[:, :, ch_cnt] = self._librosa.power_to_db(
                linear_spectra[:, :, ch_cnt], ref=1.0, amin=1e-10, top_db=None)
        linear_spectra = linear_spectra[:, self._lower_bin:self._cutoff_bin, :]
        linear_spectra = linear_spectra.transpose((0, 2, 1)).reshape((linear_spectra.shape[0], -1))
        return np.concatenate((linear_spectra, phase_vector), axis=-1)

    def extract(self, audio_in: np.ndarray) -> np.ndarray:
        """`extract_file_feature` from loaded audio [samples, channels] to [frames, features]."""
        nb_feat_frames = int(len(audio_in) / float(self._hop_len))
        spect = self.spectrogram(audio_in, nb_feat_frames)
        if not self._use_salsalite:
            mel_spect = self.mel_spectrogram(spect)
        if self._dataset == "foa":
            return np.concatenate((mel_spect, self.foa_intensity_vectors(spect)), axis=-1)
        if self._use_salsalite:
            return self.salsalite(spect)
        return np.concatenate((mel_spect, self.gcc(spect)), axis=-1)


def seldnet_stft(audio_input: np.ndarray, nfft: int = 1024, win_len: int = 960, hop_len: int = 480) -> np.ndarray:
    """SELDnet's features of float64 audio [samples, channels]: [frames, 2 * (nfft / 2) * channels],
    magnitudes then phases, each bin-major with channels interleaved, as its files store them."""
    nb_ch = audio_input.shape[1]
    max_frames = int(np.ceil((audio_input.shape[0] - win_len) / float(hop_len)))
    hann_win = np.repeat(np.hanning(win_len)[np.newaxis].T, nb_ch, 1)
    nb_bins = nfft // 2
    spectra = np.zeros((max_frames, nb_bins, nb_ch), dtype=complex)
    for ind in range(max_frames):
        start_ind = ind * hop_len
        aud_frame = audio_input[start_ind + np.arange(0, win_len), :] * hann_win
        spectra[ind] = np.fft.fft(aud_frame, n=nfft, axis=0, norm="ortho")[:nb_bins, :]
    feat_file = spectra.reshape(max_frames, -1)
    return np.concatenate((np.abs(feat_file), np.angle(feat_file)), axis=1)
